package server

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
)

// lockedBuffer is a log sink the handlers may write from any goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestMalformedCursors (issue 18): a malformed or impossible cursor, or a
// time Redis cannot range over, is the client's mistake: 400 on both APIs
// that page, on a real redis-server, and never a 503 with an ERROR log.
func TestMalformedCursors(t *testing.T) {
	srv := redistest.StartServer(t)
	d := testDeps(t, srv.URL())
	var logs lockedBuffer
	d.Log = slog.New(slog.NewTextHandler(&logs, nil))
	admin := "k-0123456789abcdefghijklmnopqrstuvwxyz"
	d.Settings.AdminTokens = []config.Secret{config.Secret(admin)}
	h := New(d)
	ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Redeemed, Actor: audit.Actor{ID: "1"},
		Subject: audit.Subject{Collection: "users", ID: "42"}, SessionID: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Store.Append(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	get := func(path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, api := range []string{"/v1/audit/events", "/v1/subjects/users/42/history"} {
		for _, cursor := range []string{"0-0", "00-000", "-", "1", "1-", "-1", "-1-0", "abc",
			"18446744073709551616-0", "1-18446744073709551616", "1-2-3", "1.5-0", "(1-0"} {
			t.Run(api+"?cursor="+cursor, func(t *testing.T) {
				rec := get(api + "?cursor=" + cursor)
				if rec.Code != 400 || !strings.Contains(rec.Body.String(), "cursor") {
					t.Errorf("%d %s, want 400 about the cursor", rec.Code, rec.Body.String())
				}
			})
		}
		// Controls: the largest cursor and 0-1 read without error.
		for _, cursor := range []string{"18446744073709551615-18446744073709551615", "0-1"} {
			if rec := get(api + "?cursor=" + cursor); rec.Code != 200 {
				t.Errorf("%s?cursor=%s: %d %s, want 200", api, cursor, rec.Code, rec.Body.String())
			}
		}
	}
	for _, q := range []string{"since=1960-01-01T00:00:00Z", "until=1970-01-01T00:00:00Z", "since=0000-01-01T00:00:00Z"} {
		if rec := get("/v1/audit/events?" + q); rec.Code != 400 {
			t.Errorf("/v1/audit/events?%s: %d %s, want 400", q, rec.Code, rec.Body.String())
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("bad input logged an ERROR:\n%s", logs.String())
	}
}
