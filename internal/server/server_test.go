package server

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
	"github.com/impersonator/impersonator/internal/token/tokentest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// testDeps returns dependencies on rdb with a fresh key and the defaults.
func testDeps(t *testing.T, rdb redis.UniversalClient) Deps {
	t.Helper()
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	keys := tokentest.Keyset(t, "")
	now := func() time.Time { return t0 }
	return Deps{
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Config:   cfg,
		Store:    store.New(rdb, store.Options{Prefix: redistest.Prefix(), Now: now}),
		Keys:     keys,
		Issuer:   token.NewIssuer(keys, cfg.PublicURL, cfg.Audience, now),
		Verifier: token.NewVerifier(keys, cfg.PublicURL, cfg.Audience, now),
		Now:      now,
	}
}

// TestRoutes pins the route table: a route added or removed must show here.
func TestRoutes(t *testing.T) {
	_, rdb := redistest.Embedded(t)
	h := New(testDeps(t, rdb))
	var got []string
	err := chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		got = append(got, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := []string{
		"GET /.well-known/jwks.json",
		"GET /healthz",
		"GET /metrics",
		"GET /readyz",
		"GET /impersonation/banner.js",
		"GET /impersonation/session",
		"GET /impersonation/start",
		"GET /impersonation/start.js",
		"OPTIONS /impersonation/login",
		"OPTIONS /impersonation/logout",
		"OPTIONS /impersonation/session",
		"POST /impersonation/login",
		"POST /impersonation/logout",
		"GET /v1/sessions",
		"DELETE /v1/sessions",
		"DELETE /v1/sessions/{id}",
		"GET /v1/audit/events",
		"GET /v1/audit/verify",
	}
	for _, p := range []string{"/forest/actions/impersonate", "/forest/_actions/{collection}/{index}/impersonate"} {
		for _, suffix := range []string{"", "/hooks/change", "/hooks/load"} {
			want = append(want, "OPTIONS "+p+suffix, "POST "+p+suffix)
		}
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

func TestPublicRoutes(t *testing.T) {
	_, rdb := redistest.Embedded(t)
	d := testDeps(t, rdb)
	h := New(d)
	for _, tc := range []struct {
		method, path string
		status       int
		bodyHas      string
	}{
		{"GET", "/healthz", 200, `{"status":"ok"}`},
		{"GET", "/readyz", 200, `{"status":"ok"}`},
		{"GET", "/.well-known/jwks.json", 200, `"kid":"` + d.Keys.Signer().ID + `"`},
		{"GET", "/metrics", 200, "impersonator_http_requests_total"},
		{"GET", "/nope", 404, `{"error":"not found"}`},
		{"POST", "/healthz", 405, `{"error":"method not allowed"}`},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			// /metrics counts earlier requests: make one first.
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d", rec.Code, tc.status)
			}
			if !strings.Contains(rec.Body.String(), tc.bodyHas) {
				t.Errorf("body = %q, want it to contain %q", rec.Body.String(), tc.bodyHas)
			}
			if rec.Header().Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id header")
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
		})
	}
}

// TestJWKSPublishesPublicKeysOnly: no private member leaves the service.
func TestJWKSPublishesPublicKeysOnly(t *testing.T) {
	_, rdb := redistest.Embedded(t)
	h := New(testDeps(t, rdb))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/.well-known/jwks.json", nil))
	if strings.Contains(rec.Body.String(), `"d"`) {
		t.Errorf("JWKS contains a private member: %s", rec.Body.String())
	}
}

// TestReadyzFollowsRedis: /readyz answers 503 while a real Redis is down and
// 200 again when it is back, without restarting the service.
func TestReadyzFollowsRedis(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	h := New(testDeps(t, rdb))
	get := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code
	}
	if got := get(); got != 200 {
		t.Fatalf("readyz with Redis up = %d, want 200", got)
	}
	srv.Stop()
	if got := get(); got != 503 {
		t.Errorf("readyz with Redis down = %d, want 503", got)
	}
	srv.Restart()
	if got := get(); got != 200 {
		t.Errorf("readyz after Redis is back = %d, want 200", got)
	}
}

func TestBodyCap(t *testing.T) {
	_, rdb := redistest.Embedded(t)
	h := New(testDeps(t, rdb))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/healthz", strings.NewReader(strings.Repeat("x", maxBody+1)))
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("status for an oversized body = %d, want 413", rec.Code)
	}
}
