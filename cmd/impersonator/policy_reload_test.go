package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

// mintAs calls the Forest action on base as admin and answers the status
// and the webhook token (empty when refused).
func mintAs(t *testing.T, base string, admin jwt.MapClaims, id string) (int, string) {
	t.Helper()
	claims := jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range admin {
		claims[k] = v
	}
	bearer, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(forestSecret))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["` + id +
		`"],"values":{"Reason":"ticket 1234: cannot see invoices"},"smart_action_id":"users-impersonate"}}}`
	req, _ := http.NewRequest(http.MethodPost, base+"/forest/actions/impersonate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var a struct {
		Webhook struct {
			Body struct{ Token string } `json:"body"`
		} `json:"webhook"`
	}
	_ = json.Unmarshal(b, &a)
	return res.StatusCode, a.Webhook.Body.Token
}

// sessionStatus is what the session endpoint answers the cookie c.
func sessionStatus(t *testing.T, base string, c *http.Cookie) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/impersonation/session", nil)
	req.AddCookie(c)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// writePolicy replaces the policy file as an operator should: a new file
// renamed over the old one, so a reader never sees half of it.
func writePolicy(t *testing.T, path, doc string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

var (
	reloadAda   = jwt.MapClaims{"id": 1001, "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "team": "Support", "role": "Admin", "permissionLevel": "admin"}
	reloadGrace = jwt.MapClaims{"id": 2002, "email": "grace@example.com", "firstName": "Grace", "lastName": "Hopper", "team": "Support", "role": "Admin", "permissionLevel": "admin"}
)

// waitFor polls cond every 50 ms until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func revokedEvents(t *testing.T, url string) []audit.Event {
	t.Helper()
	st, err := store.Open(url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out []audit.Event
	err = audit.NewLog(st, time.Now).Range(context.Background(), "-", func(e audit.Entry) bool {
		if e.Event.Type == audit.Revoked {
			out = append(out, e.Event)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func metricLine(t *testing.T, base, name string) string {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	return ""
}

// TestPolicyReloadRevokes: serve with a policy file and a short poll. Two
// admins impersonate; the file is rewritten without one of them, and within
// the poll that admin's session is revoked (session.revoked "policy no
// longer allows: rule admins…") while the other's lives. A broken file then
// keeps the policy in force and is counted.
func TestPolicyReloadRevokes(t *testing.T) {
	srv := redistest.StartServer(t)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, "admins:\n  emails: [ada@example.com, grace@example.com]\ncollections: [users]\n")
	base, stderr := startServe(t, map[string]string{
		"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": keysDir(t), "FOREST_AUTH_SECRET": forestSecret,
		"IMPERSONATOR_DELIVERY": "webhook", "IMPERSONATOR_POLICY_FILE": path, "IMPERSONATOR_POLICY_POLL": "200ms",
	})
	var cookies []*http.Cookie
	for _, admin := range []jwt.MapClaims{reloadAda, reloadGrace} {
		code, tok := mintAs(t, base, admin, "42")
		if code != 200 {
			t.Fatalf("mint as %v: %d", admin["email"], code)
		}
		c := login(t, base, tok)
		if s := sessionStatus(t, base, c); s != 200 {
			t.Fatalf("session of %v: %d", admin["email"], s)
		}
		cookies = append(cookies, c)
	}

	writePolicy(t, path, "admins:\n  emails: [ada@example.com]\ncollections: [users]\n")
	start := time.Now()
	waitFor(t, 5*time.Second, "grace's session revoked", func() bool { return sessionStatus(t, base, cookies[1]) == 401 })
	t.Logf("revoked %s after the file changed (poll 200ms)", time.Since(start).Round(time.Millisecond))
	if s := sessionStatus(t, base, cookies[0]); s != 200 {
		t.Errorf("ada's session after the reload: %d, want 200", s)
	}
	revoked := revokedEvents(t, srv.URL())
	if len(revoked) != 1 || revoked[0].Actor.Email != "grace@example.com" ||
		revoked[0].Detail != `policy no longer allows: rule admins: admin email "grace@example.com" is not in admins.emails` {
		t.Fatalf("revoked events = %+v, want grace's one, naming rule admins", revoked)
	}
	if code, _ := mintAs(t, base, reloadGrace, "42"); code != 403 {
		t.Errorf("grace's mint after the reload: %d, want 403", code)
	}

	// A broken file: the policy in force stays, the failure is counted.
	writePolicy(t, path, "admins:\n  emails: [ada@example.com, grace@example.com]\ncolections: [users]\n")
	waitFor(t, 5*time.Second, "the reload error counted", func() bool {
		return metricLine(t, base, "impersonator_policy_reload_errors_total") == "impersonator_policy_reload_errors_total 1"
	})
	if got := metricLine(t, base, "impersonator_policy_stale"); got != "impersonator_policy_stale 1" {
		t.Errorf("stale gauge: %q, want 1", got)
	}
	if code, _ := mintAs(t, base, reloadGrace, "42"); code != 403 {
		t.Errorf("grace's mint under the broken file: %d, want 403 (the previous policy)", code)
	}
	if s := sessionStatus(t, base, cookies[0]); s != 200 {
		t.Errorf("ada's session under the broken file: %d, want 200", s)
	}
	if !strings.Contains(stderr.String(), "policy reload failed") || !strings.Contains(stderr.String(), "colections") {
		t.Errorf("the log does not name the broken file's problem:\n%s", stderr.String())
	}
}

// TestPolicyReloadOnSIGHUP: with a poll too slow to matter, SIGHUP reloads
// the policy; a record added to never (spelled as the app reads it:
// "42-ada" is 42 to Rails' to_i) ends its live session.
func TestPolicyReloadOnSIGHUP(t *testing.T) {
	srv := redistest.StartServer(t)
	path := filepath.Join(t.TempDir(), "policy.json")
	writePolicy(t, path, `{"collections":["users"]}`)
	base, _ := startServe(t, map[string]string{
		"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": keysDir(t), "FOREST_AUTH_SECRET": forestSecret,
		"IMPERSONATOR_DELIVERY": "webhook", "IMPERSONATOR_POLICY_FILE": path, "IMPERSONATOR_POLICY_POLL": "10m",
	})
	code, tok := mintAs(t, base, reloadAda, "42-ada")
	if code != 200 {
		t.Fatalf("mint: %d", code)
	}
	c := login(t, base, tok)
	writePolicy(t, path, `{"collections":["users"],"never":{"users":["42"]}}`)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the session revoked after SIGHUP", func() bool { return sessionStatus(t, base, c) == 401 })
	revoked := revokedEvents(t, srv.URL())
	if len(revoked) != 1 || !strings.HasPrefix(revoked[0].Detail, "policy no longer allows: rule never: users 42-ada reads as 42") {
		t.Errorf("revoked events = %+v", revoked)
	}
}

// keysDir is a keys folder with one signing key.
func keysDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir, "--activate-after", "0"}, env(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	return dir
}
