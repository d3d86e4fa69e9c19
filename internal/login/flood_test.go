package login_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/redisurl"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// TestReplayFloodFolds: a redeemed token replayed again and again through
// the login route (real redis-server). After its first replay, replays
// count as failed logins (the client reaches 429 like any other failures),
// and the admin's replay events fold: at most 10 in the window, then one
// summary with the count. Another admin's fresh token from the flooding
// client still logs in.
func TestReplayFloodFolds(t *testing.T) {
	srv := redistest.StartServer(t)
	w := newWorld(t, srv.URL(), map[string]string{"IMPERSONATOR_LOGIN_RATE": "5/m"})
	h := w.instance()
	raw, jti := w.mint()
	if rec := loginJSON(h, raw); rec.Code != 200 {
		t.Fatalf("login: %d", rec.Code)
	}
	from := func(ip, tok string) int {
		body, _ := json.Marshal(map[string]string{"token": tok})
		req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = ip + ":1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	codes := map[int]int{}
	// One client: the first replay is not counted, the next 5 are (401),
	// then 429.
	for range 12 {
		codes[from("192.0.2.200", raw)]++
	}
	if codes[401] != 6 || codes[429] != 6 {
		t.Errorf("one client replaying 12 times, limit 5/m: %v; want 6 × 401 (the first replay and 5 counted) and 6 × 429", codes)
	}
	// Many clients, each within its own limit: the admin's events fold.
	for i := range 30 {
		if code := from(fmt.Sprintf("198.51.100.%d", i%10+1), raw); code != 401 {
			t.Fatalf("replay %d from a fresh client: %d, want 401", i, code)
		}
	}
	replays := func() (events, summaries []audit.Event) {
		for _, e := range w.events() {
			switch {
			case e.Type == audit.Rejected && strings.HasPrefix(e.Detail, "folded: "):
				summaries = append(summaries, e)
			case e.Type == audit.Rejected && e.TokenID == jti:
				events = append(events, e)
			}
		}
		return
	}
	evs, sums := replays()
	if len(evs) != 10 || len(sums) != 0 {
		t.Fatalf("%d replay events and %d summaries for 36 replays answered 401 in one window; want 10 and none yet", len(evs), len(sums))
	}
	for _, e := range evs {
		if e.Actor.ID != ada.ID || e.Reason != "ticket 1234" || !strings.HasPrefix(e.Detail, "replayed: token already redeemed") {
			t.Errorf("replay event %+v: want the grant's actor and reason and the replay detail", e)
		}
	}
	// The window ends (Redis's own expiry of its counter): the next replay
	// writes the summary, then its own event.
	c, err := redisurl.NewClient(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, err := c.PExpire(context.Background(), w.prefix+":rate:fold:replay:"+ada.ID, time.Millisecond).Result(); !ok || err != nil {
		t.Fatalf("the fold window's counter: %v, %v; want it to exist", ok, err)
	}
	time.Sleep(10 * time.Millisecond)
	if code := from("203.0.113.9", raw); code != 401 {
		t.Fatalf("replay in the next window: %d, want 401", code)
	}
	evs, sums = replays()
	if len(evs) != 11 || len(sums) != 1 || !strings.Contains(sums[0].Detail, "folded: 26 more replays") || sums[0].Actor.ID != ada.ID {
		t.Errorf("after the window: %d replay events, summaries %+v; want 11 and one summary counting the 26 folded", len(evs), sums)
	}
	// Another admin's fresh token, from the client past its limit.
	cfg := w.config()
	cl := token.Claims{Act: token.Actor{Sub: "2002", Email: "grace@example.com"}, Collection: u42.Collection}
	cl.Subject = u42.ID
	fresh, issued, err := token.NewIssuer(w.keys, cfg.PublicURL, cfg.Audience, w.clock).Issue(token.Impersonation, cl, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	grace := audit.Actor{ID: "2002", Email: "grace@example.com"}
	minted, err := audit.Encoder{Now: w.clock}.Encode(audit.Event{Type: audit.Minted, Actor: grace, Subject: u42, TokenID: issued.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.store().Reserve(context.Background(), store.Reservation{JTI: issued.ID, TTL: time.Minute, Minted: minted,
		Grant: store.Grant{Actor: grace, Subject: u42, Reason: "ticket 99", ExpiresAt: issued.ExpiresAt.Time}}); err != nil {
		t.Fatal(err)
	}
	if code := from("192.0.2.200", fresh); code != 200 {
		t.Errorf("another admin's fresh token from the client past its limit: %d, want 200", code)
	}
}
