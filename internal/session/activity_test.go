package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/impersonator/impersonator/internal/store"
)

// flakyActivity is an activity store that fails while down, and counts
// what it was given.
type flakyActivity struct {
	mu      sync.Mutex
	down    bool
	written int
}

func (f *flakyActivity) AppendActivity(_ context.Context, b store.ActivityBatch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("redis down")
	}
	for _, es := range b {
		f.written += len(es)
	}
	return nil
}

func (f *flakyActivity) ActivityCounts(context.Context, []string) ([]int64, error) { return nil, nil }

// TestRecorderKeepsThenDrops: with Redis unreachable the recorder keeps
// up to maxPending entries for the next write, drops (and counts) what
// comes past them, and writes what it kept once Redis answers again.
func TestRecorderKeepsThenDrops(t *testing.T) {
	st := &flakyActivity{down: true}
	rc := NewRecorder(st, slog.New(slog.NewTextHandler(io.Discard, nil)), 0)
	for i := range maxPending - 10 {
		rc.Record([]string{"a", "b"}[i%2], store.ActivityEntry{Method: "GET", Path: "/"})
	}
	if err := rc.Flush(context.Background()); err == nil {
		t.Fatal("flush to a Redis that is down succeeded")
	}
	for range 25 { // 10 fit, 15 are dropped
		rc.Record("c", store.ActivityEntry{Method: "GET", Path: "/"})
	}
	if got := rc.Dropped(); got != 15 {
		t.Errorf("dropped %d, want 15", got)
	}
	st.mu.Lock()
	st.down = false
	st.mu.Unlock()
	if err := rc.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st.written != maxPending {
		t.Errorf("wrote %d once Redis answered, want the %d kept", st.written, maxPending)
	}
}

// TestForwardedCaps: what an entry keeps of the request is bounded (path
// 512 bytes, method 16) and never holds the query string.
func TestForwardedCaps(t *testing.T) {
	r := httptest.NewRequest("GET", "/impersonation/session", nil)
	r.Header.Set("X-Forwarded-Method", strings.Repeat("P", 100))
	r.Header.Set("X-Forwarded-Uri", "/"+strings.Repeat("a", 1000)+"?token=secret")
	m, p, ok := forwarded(r)
	if !ok || len(m) != maxActivityMethod || len(p) != maxActivityPath || strings.Contains(p, "secret") {
		t.Errorf("forwarded = %d-byte method, %d-byte path %q…, %v; want %d, %d, no query", len(m), len(p), p[:20], ok, maxActivityMethod, maxActivityPath)
	}
	if _, _, ok := forwarded(httptest.NewRequest("GET", "/impersonation/session", nil)); ok {
		t.Error("a check without forward-auth headers was taken for a request of the app")
	}
}
