package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// TestSessionHeadersCarryNoControls (issue 18): the action refuses a
// control character in a Forest email at mint; should one be in a grant
// anyway (written before that rule, or by hand in Redis), the session
// check's X-Impersonation-Actor carries it escaped, never a raw NUL or
// CR LF, on a real redis-server.
func TestSessionHeadersCarryNoControls(t *testing.T) {
	srv := redistest.StartServer(t)
	d := testDeps(t, srv.URL())
	h := New(d)
	const email = "ada\x00@example.com\r\nX-Impersonation-Actor: root@example.com"
	actor := audit.Actor{ID: "1001", Email: email}
	subject := audit.Subject{Collection: "users", ID: "42"}
	c := token.Claims{Act: token.Actor{Sub: actor.ID, Email: email}, Collection: "users"}
	c.Subject = subject.ID
	raw, claims, err := d.Issuer.Issue(token.Impersonation, c, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	minted, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Minted, Actor: actor, Subject: subject, TokenID: claims.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Store.Reserve(context.Background(), store.Reservation{JTI: claims.ID, TTL: time.Minute, Minted: minted,
		Grant: store.Grant{Actor: actor, Subject: subject, Reason: "ticket 1234", ExpiresAt: claims.ExpiresAt.Time}}); err != nil {
		t.Fatal(err)
	}
	login := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(`{"token":"`+raw+`"}`))
	login.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, login)
	res := rec.Result()
	if res.StatusCode != 200 || len(res.Cookies()) == 0 {
		t.Fatalf("login: %d %s", rec.Code, rec.Body.String())
	}
	check := httptest.NewRequest(http.MethodGet, "/impersonation/session", nil)
	check.AddCookie(res.Cookies()[0])
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, check)
	if rec.Code != 200 {
		t.Fatalf("session: %d %s", rec.Code, rec.Body.String())
	}
	got := rec.Header().Values("X-Impersonation-Actor")
	if len(got) != 1 || got[0] != `ada\x00@example.com\x0d\x0aX-Impersonation-Actor: root@example.com` {
		t.Errorf("X-Impersonation-Actor = %q, want the one value with its controls escaped", got)
	}
}
