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

	"github.com/impersonator/impersonator/internal/action"
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

// TestHistoryByIDKind (issue 18): with a collection's id kind declared, the
// history of a record read in another spelling is the record's (the action
// mints the one spelling), and an id not of the kind is 400.
func TestHistoryByIDKind(t *testing.T) {
	srv := redistest.StartServer(t)
	d := testDeps(t, srv.URL())
	admin := "k-0123456789abcdefghijklmnopqrstuvwxyz"
	d.Settings.AdminTokens = []config.Secret{config.Secret(admin)}
	p, err := action.ParsePolicy([]byte("collections: [accounts]\nids: {accounts: uuid}\n"))
	if err != nil {
		t.Fatal(err)
	}
	d.Policy = p
	h := New(d)
	ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Redeemed, Actor: audit.Actor{ID: "1"},
		Subject: audit.Subject{Collection: "accounts", ID: "550e8400-e29b-41d4-a716-446655440000"}, SessionID: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Store.Append(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id     string
		status int
		has    string
	}{
		{"550e8400-e29b-41d4-a716-446655440000", 200, `"session_id":"s1"`},
		{"550E8400-E29B-41D4-A716-446655440000", 200, `"session_id":"s1"`},
		{"550e8400e29b41d4a716446655440000", 200, `"session_id":"s1"`},
		{"abc", 400, "not a UUID"},
	} {
		req := httptest.NewRequest(http.MethodGet, "/v1/subjects/accounts/"+tc.id+"/history", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.has) {
			t.Errorf("history of accounts %s: %d %s, want %d with %s", tc.id, rec.Code, rec.Body.String(), tc.status, tc.has)
		}
		// The events API's subject filter reads a collection's id by its
		// kind too.
		req = httptest.NewRequest(http.MethodGet, "/v1/audit/events?subject=accounts:"+tc.id, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.has) {
			t.Errorf("events of accounts:%s: %d %s, want %d with %s", tc.id, rec.Code, rec.Body.String(), tc.status, tc.has)
		}
	}
}
