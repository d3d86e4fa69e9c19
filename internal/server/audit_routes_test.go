package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
)

func TestAuditRoutes(t *testing.T) {
	m, url := redistest.EmbeddedURL(t)
	d := testDeps(t, url)
	admin := "k-0123456789abcdefghijklmnopqrstuvwxyz"
	d.Settings.AdminTokens = []config.Secret{config.Secret(admin)}
	h := New(d)
	var ids []string
	for _, typ := range []audit.Type{audit.Minted, audit.Redeemed, audit.Denied} {
		ev, err := audit.Encoder{}.Encode(audit.Event{Type: typ, Actor: audit.Actor{ID: "1", Email: "a@example.com"}})
		if err != nil {
			t.Fatal(err)
		}
		id, err := d.Store.Append(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	call := func(path, bearer string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, tc := range []struct {
		path, bearer string
		status       int
		has          string
	}{
		{"/v1/audit/events", "", 401, "unauthorized"},
		{"/v1/audit/events", "wrong-token-wrong-token-wrong-token-wrong", 401, "unauthorized"},
		{"/v1/audit/events?limit=2", admin, 200, `"next_cursor":"`},
		{"/v1/audit/events?type=impersonation.denied", admin, 200, `"type":"impersonation.denied"`},
		{"/v1/audit/events?type=nope", admin, 400, "type"},
		{"/v1/audit/events?since=yesterday", admin, 400, "since"},
		{"/v1/audit/events?limit=5000", admin, 400, "limit"},
		{"/v1/audit/events?cursor=abc", admin, 400, "cursor"},
		{"/v1/audit/verify", admin, 200, `"ok":true`},
	} {
		rec := call(tc.path, tc.bearer)
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.has) {
			t.Errorf("GET %s: %d %s, want %d containing %q", tc.path, rec.Code, rec.Body.String(), tc.status, tc.has)
		}
	}
	var page audit.Page
	if err := json.Unmarshal(call("/v1/audit/events?limit=2", admin).Body.Bytes(), &page); err != nil || len(page.Events) != 2 || page.NextCursor == nil {
		t.Fatalf("first page = %+v, %v", page, err)
	}
	var rest audit.Page
	if err := json.Unmarshal(call("/v1/audit/events?limit=2&cursor="+*page.NextCursor, admin).Body.Bytes(), &rest); err != nil || len(rest.Events) != 1 || rest.Events[0].Type != audit.Minted || rest.NextCursor != nil {
		t.Errorf("second page = %+v, %v; want the oldest event and no cursor", rest, err)
	}
	// Delete an event after checkpointing (an attacker with Redis access):
	// verify answers 409 naming it.
	if _, err := audit.NewLog(d.Store, d.Now).CatchUp(context.Background(), d.Keys, 0); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	var stream string
	for _, k := range m.Keys() {
		if strings.HasSuffix(k, ":audit") {
			stream = k
		}
	}
	if n, err := rdb.XDel(context.Background(), stream, ids[1]).Result(); err != nil || n != 1 {
		t.Fatalf("XDEL %s %s = %d, %v", stream, ids[1], n, err)
	}
	if rec := call("/v1/audit/verify", admin); rec.Code != 409 || !strings.Contains(rec.Body.String(), ids[1]) {
		t.Errorf("verify after a deletion: %d %s, want 409 naming %s", rec.Code, rec.Body.String(), ids[1])
	}
}
