package login_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/impersonator/impersonator/internal/redistest"
)

// respellings are other spellings of a JWT's signature that a lenient
// base64url decoder reads as the same bytes (issue 18).
func respellings(raw string) map[string]string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.LastIndexByte(raw, '.')
	head, sig := raw[:i+1], raw[i+1:]
	last := strings.IndexByte(alphabet, sig[len(sig)-1])
	std := strings.NewReplacer("-", "+", "_", "/").Replace(sig)
	if std == sig {
		std = "+" + sig[1:]
	}
	return map[string]string{
		"low bits":     head + sig[:len(sig)-1] + string(alphabet[last^1]),
		"padding":      head + sig + "==",
		"line break":   head + sig[:20] + "\n" + sig[20:],
		"std alphabet": head + std,
	}
}

// TestRespelledTokenAndCookie: at the login route, a re-spelled token is
// 401 and stays unredeemed (the canonical one then logs in); at the session
// check, a re-spelled session cookie is 401. Real redis-server.
func TestRespelledTokenAndCookie(t *testing.T) {
	srv := redistest.StartServer(t)
	w := newWorld(t, srv.URL(), nil)
	h := w.instance()
	raw, _ := w.mint()
	for name, s := range respellings(raw) {
		if rec := loginJSON(h, s); rec.Code != http.StatusUnauthorized {
			t.Errorf("login with the token re-spelled (%s): %d, want 401", name, rec.Code)
		}
	}
	for _, e := range w.events() {
		if !strings.HasPrefix(e.Detail, "invalid token: malformed token") {
			t.Errorf("event %s %q, want a rejection of a malformed token", e.Type, e.Detail)
		}
	}
	rec := loginJSON(h, raw)
	if rec.Code != http.StatusOK {
		t.Fatalf("the token as minted: %d, want 200", rec.Code)
	}
	c := sessionCookie(t, rec)
	check := func(value string) int {
		req := httptest.NewRequest(http.MethodGet, "/impersonation/session", nil)
		req.Header.Set("Cookie", c.Name+"="+value)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for name, s := range respellings(c.Value) {
		if strings.ContainsAny(s, "\r\n") {
			continue // no cookie carries a line break
		}
		if code := check(s); code != http.StatusUnauthorized {
			t.Errorf("session cookie re-spelled (%s): %d, want 401", name, code)
		}
	}
	if code := check(c.Value); code != http.StatusOK {
		t.Errorf("the session cookie as set: %d, want 200", code)
	}
}
