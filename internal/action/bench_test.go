package action_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
)

// BenchmarkMint runs the whole action (routing, CORS, admin JWT, body,
// policy, rate counter, token signing, reserve-and-audit script, answer)
// against a real redis-server.
func BenchmarkMint(b *testing.B) {
	srv := redistest.StartServer(b)
	policy := action.DefaultPolicy()
	policy.Rate = config.Rate{N: 1 << 30, Per: time.Hour} // counted on every mint, never refusing
	f := newFixture(b, srv.URL(), nil, policy)
	bearer := forestJWT(b, authSecret, nodeAdmin())
	body := readTestdata(b, "requests/legacy-users-42.json")
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, legacyPath, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+bearer)
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
	}
}

// BenchmarkFloorMint is the floor of a mint: the work no implementation can
// skip, one Ed25519 signature and one Redis round trip on the same server.
func BenchmarkFloorMint(b *testing.B) {
	srv := redistest.StartServer(b)
	c := srv.Client(b)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte(strings.Repeat("x", 300))
	b.ReportAllocs()
	for b.Loop() {
		ed25519.Sign(priv, msg)
		if err := c.Ping(b.Context()).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
