package login_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// TestLoginIsOneRoundTrip: a login, whatever its outcome, is one Redis
// round trip: the grant's check, the consume, the session, the auto-delivery
// rules and the audit events in one script (once the server has the
// script: the first use after a restart also loads it).
func TestLoginIsOneRoundTrip(t *testing.T) {
	srv := redistest.StartServer(t)
	c := redistest.CountTrips(t, srv.Addr)
	w := newWorld(t, c.URL(), nil)
	h := w.instance()
	warm, _ := w.mint()
	if rec := loginJSON(h, warm); rec.Code != 200 {
		t.Fatalf("warm-up login: %d", rec.Code)
	}
	if rec := loginJSON(h, warm); rec.Code != 401 { // loads the replay's fold script
		t.Fatalf("warm-up replay: %d", rec.Code)
	}
	trips := func(name string, want int64, wantCode int, f func() int) {
		t.Helper()
		code := 0
		if n := c.Trips(func() { code = f() }); n != want || code != wantCode {
			t.Errorf("%s: %d round trips, status %d; want %d and %d", name, n, code, want, wantCode)
		}
	}
	one := func(name string, wantCode int, f func() int) { t.Helper(); trips(name, 1, wantCode, f) }
	raw, _ := w.mint()
	one("webhook login", 200, func() int { return loginJSON(h, raw).Code })
	// A replay changes nothing: its event is counted and folded in a
	// second step (TestReplayFloodFolds).
	trips("replay", 2, 401, func() int { return loginJSON(h, raw).Code })
	raw, _ = w.mint()
	one("form login", 303, func() int { return loginForm(h, raw).Code })

	env := map[string]string{"IMPERSONATOR_DELIVERY": "auto", "FOREST_AUTH_SECRET": forestSecret}
	a := newWorld(t, c.URL(), env)
	ah := a.instance()

	wt, rt := a.mintAuto(ah)
	var cookie *http.Cookie
	one("auto, cookie kept: webhook credential", 200, func() int {
		rec := loginJSON(ah, wt)
		if rec.Code == 200 {
			cookie = sessionCookie(t, rec)
		}
		return rec.Code
	})
	one("auto, cookie kept: redirect credential not needed", 303, func() int { return startPage(ah, rt, cookie).Code })

	wt, rt = a.mintAuto(ah)
	one("auto, cookie dropped: webhook credential", 200, func() int { return loginJSON(ah, wt).Code })
	one("auto, cookie dropped: redirect credential supersedes", 303, func() int { return startPage(ah, rt, nil).Code })

	wt, rt = a.mintAuto(ah)
	one("auto, tab first: redirect credential", 303, func() int { return startPage(ah, rt, nil).Code })
	one("auto, tab first: webhook credential refused", 401, func() int { return loginJSON(ah, wt).Code })
}

// TestLoginGrantDisagrees: a validly signed token whose claims are not its
// grant's gets the one 401, with its cause audited from the claims, and
// opens nothing.
func TestLoginGrantDisagrees(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, nil)
	h := w.instance()
	cfg := w.config()
	c := token.Claims{Act: token.Actor{Sub: ada.ID, Email: ada.Email}, Collection: u42.Collection}
	c.Subject = "43" // the grant says 42
	raw, issued, err := token.NewIssuer(w.keys, cfg.PublicURL, cfg.Audience, w.clock).Issue(token.Impersonation, c, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	g := store.Grant{Actor: ada, Subject: u42, Reason: "ticket 1234", ExpiresAt: issued.ExpiresAt.Time}
	if _, err := w.store().Reserve(context.Background(), store.Reservation{JTI: issued.ID, Grant: g, TTL: time.Minute,
		Minted: audit.Encoded{JSON: []byte(`{"id":"m","time":"2026-11-25T10:00:00Z","type":"impersonation.minted"}`)}}); err != nil {
		t.Fatal(err)
	}
	rec := loginJSON(h, raw)
	if rec.Code != 401 || rec.Body.String() != `{"error":"invalid_token"}`+"\n" || len(rec.Result().Cookies()) != 0 {
		t.Fatalf("answer = %d %s with %d cookies, want 401 invalid_token and none", rec.Code, rec.Body.String(), len(rec.Result().Cookies()))
	}
	want := []audit.Event{{Type: audit.Rejected, Actor: audit.Actor{ID: ada.ID, Email: ada.Email}, Subject: audit.Subject{Collection: "users", ID: "43"},
		Scope: "full", TokenID: issued.ID, IP: "192.0.2.1", UserAgent: "test-browser", Detail: "token and its server-side grant disagree"}}
	if diff := cmp.Diff(want, w.events(), ignoreVolatile); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if n, err := w.store().Sessions(context.Background(), ""); err != nil || len(n) != 0 {
		t.Errorf("sessions = %v, %v; want none", n, err)
	}
}

// TestLoginScopeDisagrees: a token claiming full access whose grant is
// read-only is refused: the scope is checked with the actor and subject.
func TestLoginScopeDisagrees(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, nil)
	h := w.instance()
	cfg := w.config()
	c := token.Claims{Act: token.Actor{Sub: ada.ID, Email: ada.Email}, Collection: u42.Collection, Scope: token.ScopeFull}
	c.Subject = u42.ID
	raw, issued, err := token.NewIssuer(w.keys, cfg.PublicURL, cfg.Audience, w.clock).Issue(token.Impersonation, c, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	g := store.Grant{Actor: ada, Subject: u42, Reason: "ticket 1234", Scope: token.ScopeRead, ExpiresAt: issued.ExpiresAt.Time}
	if _, err := w.store().Reserve(context.Background(), store.Reservation{JTI: issued.ID, Grant: g, TTL: time.Minute,
		Minted: audit.Encoded{JSON: []byte(`{"id":"m","time":"2026-11-25T10:00:00Z","type":"impersonation.minted"}`)}}); err != nil {
		t.Fatal(err)
	}
	if rec := loginJSON(h, raw); rec.Code != 401 || len(rec.Result().Cookies()) != 0 {
		t.Fatalf("a full-access claim on a read-only grant: %d with %d cookies, want 401 and none", rec.Code, len(rec.Result().Cookies()))
	}
	if evs := w.events(); len(evs) != 1 || evs[0].Detail != "token and its server-side grant disagree" {
		t.Errorf("events = %+v", evs)
	}
}
