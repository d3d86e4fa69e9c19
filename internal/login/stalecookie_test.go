package login_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/impersonator/impersonator/internal/redistest"
)

// TestSessionEndpointClearsStaleCookie: a 401 from GET
// /impersonation/session to a request carrying the session cookie clears
// that cookie (same name, Path=/, Secure when it is, Max-Age=0), so the
// browser stops sending it and an app that verifies only its signature
// stops impersonating too. No cookie, or a 503 with Redis down, clears
// nothing.
func TestSessionEndpointClearsStaleCookie(t *testing.T) {
	srv := redistest.StartServer(t)
	for _, tc := range []struct {
		publicURL, name string
		// secure lists each clearing line's Secure: with an http public
		// URL, one for the webhook's cookie (SameSite=None, so Secure)
		// and one for the start page's (Lax, not Secure).
		secure []bool
	}{
		{"http://imp.test", "impersonation_session", []bool{true, false}},
		{"https://imp.test", "__Host-impersonation_session", []bool{true}},
	} {
		t.Run(tc.publicURL, func(t *testing.T) {
			w := newWorld(t, srv.URL()+"?max_retries=-1&dial_timeout=200ms", map[string]string{"IMPERSONATOR_PUBLIC_URL": tc.publicURL})
			a, b := w.instance(), w.instance()
			c := login(t, w, a)
			if c.Name != tc.name {
				t.Fatalf("session cookie %q, want %q", c.Name, tc.name)
			}
			if rec := get(a, "/impersonation/session", c); rec.Code != 200 || len(rec.Header().Values("Set-Cookie")) != 0 {
				t.Fatalf("live session: %d, Set-Cookie %q; want 200 and none", rec.Code, rec.Header().Values("Set-Cookie"))
			}
			// Revoked on one instance, asked on the other.
			sid := sessionID(t, a, c)
			if rec := do(a, http.MethodDelete, "/v1/sessions/"+sid, nil, adminToken); rec.Code != 204 {
				t.Fatalf("revoke: %d", rec.Code)
			}
			garbage := &http.Cookie{Name: tc.name, Value: "x.y.z"}
			for name, ck := range map[string]*http.Cookie{"revoked session": c, "garbage cookie": garbage} {
				rec := get(b, "/impersonation/session", ck)
				if rec.Code != 401 {
					t.Fatalf("%s: %d, want 401", name, rec.Code)
				}
				set := rec.Header().Values("Set-Cookie")
				if len(set) != len(tc.secure) {
					t.Fatalf("%s: Set-Cookie %q, want %d that clear the cookie", name, set, len(tc.secure))
				}
				for i, line := range set {
					wantCleared(t, name, line, tc.name, tc.secure[i])
				}
				if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
					t.Errorf("%s: Cache-Control %q, want no-store", name, cc)
				}
			}
			if rec := get(b, "/impersonation/session", nil); rec.Code != 401 || len(rec.Header().Values("Set-Cookie")) != 0 {
				t.Errorf("no cookie: %d, Set-Cookie %q; want 401 and none", rec.Code, rec.Header().Values("Set-Cookie"))
			}
		})
	}
	t.Run("Redis down: 503 clears nothing", func(t *testing.T) {
		down := redistest.StartServer(t)
		w := newWorld(t, down.URL()+"?max_retries=-1&dial_timeout=200ms", nil)
		h := w.instance()
		c := login(t, w, h)
		down.Stop()
		if rec := get(h, "/impersonation/session", c); rec.Code != 503 || len(rec.Header().Values("Set-Cookie")) != 0 {
			t.Errorf("Redis down: %d, Set-Cookie %q; want 503 and none", rec.Code, rec.Header().Values("Set-Cookie"))
		}
	})
}

// wantCleared checks that the Set-Cookie line removes the session cookie
// named name: empty value, Max-Age=0, Path=/, HttpOnly, Secure as set.
func wantCleared(t *testing.T, what, line, name string, secure bool) {
	t.Helper()
	ck, err := http.ParseSetCookie(line)
	if err != nil {
		t.Fatalf("%s: Set-Cookie %q: %v", what, line, err)
	}
	if ck.Name != name || ck.Value != "" || ck.Path != "/" || !ck.HttpOnly || ck.Secure != secure || ck.Domain != "" {
		t.Errorf("%s: Set-Cookie %q, want %s cleared with Path=/, HttpOnly, Secure=%v, no Domain", what, line, name, secure)
	}
	if !strings.Contains(line, "Max-Age=0") {
		t.Errorf("%s: Set-Cookie %q lacks Max-Age=0", what, line)
	}
}

// sessionID asks the session endpoint for c's session id.
func sessionID(t *testing.T, h http.Handler, c *http.Cookie) string {
	t.Helper()
	rec := get(h, "/impersonation/session", c)
	_, rest, ok := strings.Cut(rec.Body.String(), `"session_id":"`)
	sid, _, ok2 := strings.Cut(rest, `"`)
	if rec.Code != 200 || !ok || !ok2 || sid == "" {
		t.Fatalf("session: %d %s", rec.Code, rec.Body.String())
	}
	return sid
}
