package login_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/impersonator/impersonator/internal/redistest"
)

// TestSameSiteByOpener: a session opened by the start page (auto or
// redirect delivery, a first-party form) is SameSite=Lax; only a session
// opened by the webhook's cross-site JSON login is SameSite=None (and
// Secure, as browsers require). Secure otherwise follows the public URL.
// The real login route on a real redis-server.
func TestSameSiteByOpener(t *testing.T) {
	srv := redistest.StartServer(t)
	for _, tc := range []struct {
		delivery, publicURL string
		startSecure         bool
	}{
		{"auto", "http://imp.test", false},
		{"auto", "https://imp.test", true},
		{"redirect", "http://imp.test", false},
		{"redirect", "https://imp.test", true},
	} {
		t.Run(tc.delivery+" "+tc.publicURL, func(t *testing.T) {
			w := newWorld(t, srv.URL(), map[string]string{"IMPERSONATOR_DELIVERY": tc.delivery,
				"FOREST_AUTH_SECRET": forestSecret, "IMPERSONATOR_PUBLIC_URL": tc.publicURL})
			h := w.instance()
			raw, _ := w.mint()
			req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(url.Values{"token": {raw}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", tc.publicURL) // the start page's form
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusSeeOther {
				t.Fatalf("start page login: %d, want 303", rec.Code)
			}
			if c := sessionCookie(t, rec); c.SameSite != http.SameSiteLaxMode || c.Secure != tc.startSecure || !c.HttpOnly {
				t.Errorf("start page's cookie %+v, want SameSite=Lax, Secure=%v, HttpOnly", c, tc.startSecure)
			}
			if tc.delivery != "auto" {
				return
			}
			raw, _ = w.mint()
			if c := sessionCookie(t, loginJSON(h, raw)); c.SameSite != http.SameSiteNoneMode || !c.Secure {
				t.Errorf("webhook's cookie %+v, want SameSite=None and Secure", c)
			}
		})
	}
}
