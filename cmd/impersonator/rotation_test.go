package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/redistest"
)

// kidOf returns the kid in a JWT's header.
func kidOf(t *testing.T, jwt string) string {
	t.Helper()
	h, _, _ := strings.Cut(jwt, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct{ Kid string }
	if err := json.Unmarshal(b, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}

func jwksKids(t *testing.T, base string) []string {
	t.Helper()
	var set struct{ Keys []struct{ Kid string } }
	if code := getJSON(t, base+"/.well-known/jwks.json", &set); code != 200 {
		t.Fatalf("jwks: %d", code)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.Kid)
	}
	return out
}

// TestRotationWithoutOutage: two instances share a keys folder and a Redis.
// A new key is published before it signs (SIGHUP reloads both), signs once
// its activation time comes, and the old one is retired; at no step is a
// token or cookie refused by the other instance, and verify never reports
// tampering.
func TestRotationWithoutOutage(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	keys := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(context.Background(), append([]string{"keys"}, args...), env(nil), &out, io.Discard); err != nil {
			t.Fatalf("keys %v: %v", args, err)
		}
		return out.String()
	}
	keys("generate", "--dir", dir, "--activate-after", "0")
	const admin = "rotation-admin-token-0123456789abcdefghij"
	vars := func() map[string]string {
		return map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir, "FOREST_AUTH_SECRET": forestSecret,
			"IMPERSONATOR_ADMIN_TOKENS": admin, "IMPERSONATOR_CHECKPOINT_INTERVAL": "1s", "IMPERSONATOR_DELIVERY": "webhook"}
	}
	a, _ := startServe(t, vars())
	b, _ := startServe(t, vars())
	oldKid := jwksKids(t, a)[0]

	// Every step: mint on one instance, log in on the other, check the
	// session on both, and keep every earlier cookie working.
	var cookies []*http.Cookie
	check := func(step string, wantKid string) {
		t.Helper()
		for _, pair := range [][2]string{{a, b}, {b, a}} {
			tok := mint(t, pair[0], "42")
			if got := kidOf(t, tok); got != wantKid {
				t.Errorf("%s: token signed by %s, want %s", step, got, wantKid)
			}
			cookies = append(cookies, login(t, pair[1], tok))
		}
		for i, c := range cookies {
			for _, base := range []string{a, b} {
				req, _ := http.NewRequest("GET", base+"/impersonation/session", nil)
				req.AddCookie(c)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				if res.StatusCode != 200 {
					t.Errorf("%s: cookie %d refused by %s: %d", step, i, base, res.StatusCode)
				}
			}
		}
		for _, base := range []string{a, b} {
			req, _ := http.NewRequest("GET", base+"/v1/audit/verify", nil)
			req.Header.Set("Authorization", "Bearer "+admin)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || strings.Contains(string(body), `"tampered":true`) {
				t.Errorf("%s: verify on %s = %d %s", step, base, res.StatusCode, body)
			}
		}
	}
	check("one key", oldKid)

	keys("generate", "--dir", dir, "--activate-after", "3s")
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil { // both instances reload
		t.Fatal(err)
	}
	var newKid string
	deadline := time.Now().Add(5 * time.Second)
	for newKid == "" && time.Now().Before(deadline) {
		ka, kb := jwksKids(t, a), jwksKids(t, b)
		if len(ka) == 2 && len(kb) == 2 {
			for _, k := range ka {
				if k != oldKid {
					newKid = k
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if newKid == "" {
		t.Fatal("after SIGHUP the instances do not publish the new key")
	}
	check("new key pending: published, not signing", oldKid)

	time.Sleep(3 * time.Second)
	check("new key signing", newKid)

	if out := keys("retire", oldKid, "--dir", dir, "--grace", "30m"); !strings.Contains(out, oldKid) {
		t.Errorf("keys retire printed %q", out)
	}
	syscall.Kill(syscall.Getpid(), syscall.SIGHUP)
	time.Sleep(200 * time.Millisecond)
	check("old key retired, within its grace", newKid)
	if list := keys("list", "--dir", dir); !strings.Contains(list, "retired") && !strings.Contains(list, "verify-only") {
		t.Errorf("keys list after retire:\n%s", list)
	}
}
