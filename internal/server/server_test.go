package server

import (
	"fmt"
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

	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
	"github.com/impersonator/impersonator/internal/token/tokentest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// testDeps returns dependencies on the Redis of url with a fresh key and
// the defaults.
func testDeps(t *testing.T, url string) Deps {
	t.Helper()
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	keys := tokentest.Keyset(t, "")
	now := func() time.Time { return t0 }
	st, err := store.Open(url, store.Options{Prefix: redistest.Prefix(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return Deps{
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Settings: SettingsFrom(cfg),
		Store:    st,
		Keys:     keys,
		Issuer:   token.NewIssuer(keys, cfg.PublicURL, cfg.Audience, now),
		Verifier: token.NewVerifier(keys, cfg.PublicURL, cfg.Audience, now),
		Now:      now,
	}
}

// TestRoutes pins the route table: a route added or removed must show here.
func TestRoutes(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	h := New(testDeps(t, url))
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
		"HEAD /.well-known/jwks.json",
		"GET /healthz",
		"GET /metrics",
		"GET /openapi.yaml",
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
		"GET /v1/sessions/{id}/activity",
		"GET /v1/audit/events",
		"GET /v1/audit/verify",
		"PUT /v1/consents/{collection}/{id}",
		"GET /v1/consents/{collection}/{id}",
		"DELETE /v1/consents/{collection}/{id}",
		"GET /v1/subjects/{collection}/{id}/history",
	}
	for _, p := range []string{"/forest/actions/impersonate", "/forest/_actions/{collection}/{index}/impersonate",
		"/forest/actions/impersonation-history", "/forest/_actions/{collection}/{index}/impersonation-history"} {
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
	_, url := redistest.EmbeddedURL(t)
	d := testDeps(t, url)
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
	_, url := redistest.EmbeddedURL(t)
	h := New(testDeps(t, url))
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
	h := New(testDeps(t, srv.URL()+"?max_retries=-1&dial_timeout=200ms"))
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
	_, url := redistest.EmbeddedURL(t)
	h := New(testDeps(t, url))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/healthz", strings.NewReader(strings.Repeat("x", maxBody+1)))
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("status for an oversized body = %d, want 413", rec.Code)
	}
}

// TestMetricsLabelsBounded: invented methods and unrouted paths make no new
// series: the method label is one of a fixed set, the route the pattern or
// "unmatched".
func TestMetricsLabelsBounded(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	h := New(testDeps(t, url))
	for i := range 50 {
		req := httptest.NewRequest("GET", "/healthz", nil)
		req.Method = fmt.Sprintf("INVENTED%d", i)
		h.ServeHTTP(httptest.NewRecorder(), req)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", fmt.Sprintf("/random/%d", i), nil))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	if strings.Contains(body, "INVENTED") || strings.Contains(body, "/random/") {
		t.Fatal("a client-chosen method or path became a metric label")
	}
	var series int
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "impersonator_http_requests_total{") {
			series++
		}
	}
	if series > 4 || !strings.Contains(body, `method="other"`) || !strings.Contains(body, `route="unmatched"`) {
		t.Errorf("%d request series; want a handful, with method other and route unmatched:\n%s", series, body)
	}
}

// TestMetricsElsewhere: with IMPERSONATOR_METRICS_LISTEN set, /metrics is
// not on the public listener.
func TestMetricsElsewhere(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	d := testDeps(t, url)
	d.Settings.MetricsElsewhere = true
	rec := httptest.NewRecorder()
	New(d).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("/metrics on the public listener = %d, want 404", rec.Code)
	}
}

// TestIntegrityAlarmMetric: the alarm shows under both names, the issue's
// and DESIGN.md 3.7's.
func TestIntegrityAlarmMetric(t *testing.T) {
	m := NewMetrics(nil)
	m.SetAlarm(true)
	rec := httptest.NewRecorder()
	MetricsHandler(m).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, name := range []string{"impersonator_audit_integrity_alarm 1", "impersonation_audit_integrity_alarm 1"} {
		if !strings.Contains(rec.Body.String(), name) {
			t.Errorf("metrics lack %q", name)
		}
	}
}
