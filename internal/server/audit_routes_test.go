package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
)

func TestAuditRoutes(t *testing.T) {
	_, rdb := redistest.Embedded(t)
	d := testDeps(t, rdb)
	admin := strings.Repeat("k", 40)
	d.Config.AdminTokens = []config.Secret{config.Secret(admin)}
	h := New(d)
	for _, typ := range []audit.Type{audit.Minted, audit.Redeemed, audit.Denied} {
		if _, err := d.Store.Append(context.Background(), audit.Event{Type: typ, Actor: audit.Actor{ID: "1", Email: "a@example.com"}}); err != nil {
			t.Fatal(err)
		}
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
	// Delete an event after checkpointing: verify answers 409 naming it.
	if _, err := d.AuditLog().CatchUp(context.Background(), d.Keys); err != nil {
		t.Fatal(err)
	}
	entries, _ := d.Store.Range(context.Background(), "-", "+", 0)
	rdb.XDel(context.Background(), d.Store.AuditStream(), entries[1].StreamID)
	if rec := call("/v1/audit/verify", admin); rec.Code != 409 || !strings.Contains(rec.Body.String(), entries[1].StreamID) {
		t.Errorf("verify after a deletion: %d %s, want 409 naming %s", rec.Code, rec.Body.String(), entries[1].StreamID)
	}
}
