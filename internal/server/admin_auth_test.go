package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/impersonator/impersonator/internal/config"
)

func TestRequireAdmin(t *testing.T) {
	good := config.Secret(strings.Repeat("a", 40))
	other := config.Secret(strings.Repeat("b", 40))
	var seen string
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = AdminFrom(r.Context()) })
	for _, tc := range []struct {
		name   string
		tokens []config.Secret
		header string
		status int
	}{
		{"no tokens configured", nil, "Bearer " + string(good), http.StatusForbidden},
		{"no header", []config.Secret{good}, "", http.StatusUnauthorized},
		{"wrong token", []config.Secret{good}, "Bearer " + strings.Repeat("c", 40), http.StatusUnauthorized},
		{"prefix of the token", []config.Secret{good}, "Bearer " + string(good[:39]), http.StatusUnauthorized},
		{"basic scheme", []config.Secret{good}, "Basic " + string(good), http.StatusUnauthorized},
		{"first token", []config.Secret{good, other}, "Bearer " + string(good), http.StatusOK},
		{"second token, lower-case scheme", []config.Secret{good, other}, "bearer " + string(other), http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen = ""
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/v1/x", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			requireAdmin(tc.tokens)(ok).ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d (%s)", rec.Code, tc.status, rec.Body.String())
			}
			if tc.status == http.StatusOK && !strings.HasPrefix(seen, "token:") {
				t.Errorf("admin identity = %q, want token:<digest>", seen)
			}
			if strings.Contains(rec.Body.String()+seen, string(good)) {
				t.Error("a token leaked into the answer or the identity")
			}
		})
	}
}
