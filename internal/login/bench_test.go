package login_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/session"
)

// BenchmarkSession is the customer app's hot path: GET
// /impersonation/session with a valid cookie (already verified once, so
// cached), on a real redis-server: routing, cookie lookup, one Touch
// script, headers and JSON.
func BenchmarkSession(b *testing.B) {
	srv := redistest.StartServer(b)
	w := newWorld(b, srv.URL(), nil)
	h := w.instance()
	raw, _ := w.mint()
	rec := loginJSON(h, raw)
	if rec.Code != 200 {
		b.Fatal(rec.Code)
	}
	c := sessionCookie(b, rec)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/impersonation/session", nil)
		req.AddCookie(c)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkSessionCached is the same with the instance's session cache
// running (as serve runs it): after the first check, no Redis.
func BenchmarkSessionCached(b *testing.B) {
	srv := redistest.StartServer(b)
	w := newWorld(b, srv.URL(), nil)
	cache := session.NewCache(10 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cache.Run(ctx, w.store(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for !cache.Subscribed() {
		time.Sleep(time.Millisecond)
	}
	h := w.instanceWith(cache)
	raw, _ := w.mint()
	rec := loginJSON(h, raw)
	if rec.Code != 200 {
		b.Fatal(rec.Code)
	}
	c := sessionCookie(b, rec)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/impersonation/session", nil)
		req.AddCookie(c)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkFloorSession is the floor: the one Redis round trip (PING) that
// no server-side revocation check can avoid.
func BenchmarkFloorSession(b *testing.B) {
	srv := redistest.StartServer(b)
	c := srv.Client(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLogin is one webhook login on a real redis-server: verify the
// token, sign the session, redeem. The tokens are minted before the timer
// starts.
func BenchmarkLogin(b *testing.B) {
	srv := redistest.StartServer(b)
	w := newWorld(b, srv.URL(), nil)
	h := w.instance()
	toks := make([]string, b.N)
	for i := range toks {
		toks[i], _ = w.mint()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if rec := loginJSON(h, toks[i]); rec.Code != 200 {
			b.Fatal(rec.Code, rec.Body.String())
		}
	}
}
