package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/redistest"
)

// TestConsentExpiryEndsSessions: on the wall clock, through serve and a
// real redis-server. users 42's customer consents for about two seconds,
// users 7's for a day; both are impersonated. When 42's consent lapses by
// its until, the sweeper revokes its session (session.revoked "consent
// expired") as a withdrawal would, and a new mint is refused; 7's session
// lives on.
func TestConsentExpiryEndsSessions(t *testing.T) {
	srv := redistest.StartServer(t)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, "collections: [users]\nrequire_consent: [users]\n")
	const admin = "consent-expiry-admin-token-0123456789abcdef"
	base, _ := startServe(t, map[string]string{
		"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": keysDir(t), "FOREST_AUTH_SECRET": forestSecret,
		"IMPERSONATOR_DELIVERY": "webhook", "IMPERSONATOR_POLICY_FILE": path, "IMPERSONATOR_ADMIN_TOKENS": admin,
		"IMPERSONATOR_SWEEP_INTERVAL": "100ms",
	})
	consent := func(id string, until time.Time) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, base+"/v1/consents/users/"+id,
			strings.NewReader(`{"until":"`+until.UTC().Format(time.RFC3339)+`","note":"chat 1"}`))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("consent %s: %d", id, res.StatusCode)
		}
	}
	// RFC 3339 in whole seconds: until is 3 to 4 s ahead.
	until := time.Now().Add(4 * time.Second).Truncate(time.Second)
	consent("42", until)
	consent("7", time.Now().Add(24*time.Hour))
	code, tok := mintAs(t, base, reloadAda, "42")
	if code != 200 {
		t.Fatalf("mint 42: %d", code)
	}
	c42 := login(t, base, tok)
	code, tok = mintAs(t, base, reloadAda, "7")
	if code != 200 {
		t.Fatalf("mint 7: %d", code)
	}
	c7 := login(t, base, tok)
	if sessionStatus(t, base, c42) != 200 || sessionStatus(t, base, c7) != 200 {
		t.Fatal("sessions not live before the lapse")
	}
	if time.Now().After(until) {
		t.Fatal("the machine was too slow to impersonate before the consent lapsed: nothing was checked")
	}
	waitFor(t, 5*time.Second, "users 42's session revoked after its consent lapsed", func() bool { return sessionStatus(t, base, c42) == 401 })
	if ended := time.Since(until); ended < 0 {
		t.Errorf("the session ended %s before its consent's until", -ended)
	}
	if sessionStatus(t, base, c7) != 200 {
		t.Error("users 7's session (consent for a day) ended too")
	}
	if code, _ := mintAs(t, base, reloadAda, "42"); code != 403 {
		t.Errorf("mint after the lapse: %d, want 403", code)
	}
	revoked := revokedEvents(t, srv.URL())
	if len(revoked) != 1 || revoked[0].Detail != "consent expired" || revoked[0].Subject.ID != "42" {
		t.Errorf("revoked events = %+v, want one for users 42, detail consent expired", revoked)
	}
}
