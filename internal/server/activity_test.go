package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
)

// withActivity gives the deployment an activity recorder flushing every
// 20 ms, running until the test ends.
func withActivity(d *deployment, deps *Deps) {
	rec := session.NewRecorder(d.st, slog.New(slog.NewTextHandler(io.Discard, nil)), 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rec.Run(ctx) }()
	d.t.Cleanup(func() { cancel(); <-done })
	deps.Activity = rec
}

// forwardAuth is the session check as a forward-auth proxy sends it.
func (d *deployment) forwardAuth(c *http.Cookie, hdr map[string]string) int {
	return d.do(http.MethodGet, "/impersonation/session", "", hdr, c).Code
}

// activity reads GET /v1/sessions/{sid}/activity once it counts want
// requests (the recorder writes in the background).
func (d *deployment) activity(sid string, want int64) session.ActivityPage {
	d.t.Helper()
	var page session.ActivityPage
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec := d.admin("GET", "/v1/sessions/"+sid+"/activity", "")
		if rec.Code == 200 {
			if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
				d.t.Fatal(err)
			}
			if page.Requests >= want {
				return page
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("activity of %s: %d %s, want %d requests", sid, rec.Code, rec.Body.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestActivityTrail: the requests forward-auth sees during a read-only
// impersonation are recorded against the session (method from either
// header, path without its query string, the decision, a read-only
// refusal as deny); a check without forward-auth headers is not; the
// trail shows in GET /v1/sessions/{sid}/activity, in the history API and
// in the history action; the session's end event carries the count.
func TestActivityTrail(t *testing.T) {
	d := newDeployment(t, nil, withActivity)
	c := d.impersonate(featAda, "users", "42", "ticket 20: what did support do", "Read only")
	sid := sidOf(t, d, c)
	for _, x := range []struct {
		hdr  map[string]string
		want int
	}{
		{map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/invoices?page=2&token=secret"}, 200},
		{map[string]string{"X-Forwarded-Method": "POST", "X-Original-URI": "/invoices/9/pay#now"}, 403},
		{map[string]string{"X-Original-Method": "HEAD", "X-Original-URI": "/logo.png"}, 200},
		{map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/a", "X-Original-URI": "/b"}, 200},
		{nil, 200}, // introspection: not a request of the app
	} {
		if got := d.forwardAuth(c, x.hdr); got != x.want {
			t.Fatalf("%v: %d, want %d", x.hdr, got, x.want)
		}
	}
	page := d.activity(sid, 4)
	at := d.clock().UTC()
	want := session.ActivityPage{SessionID: sid, Requests: 4, Entries: []store.ActivityEntry{
		{Time: at, Method: "GET", Path: "/invoices", Decision: "allow"},
		{Time: at, Method: "POST", Path: "/invoices/9/pay", Decision: "deny"},
		{Time: at, Method: "HEAD", Path: "/logo.png", Decision: "allow"},
		{Time: at, Method: "GET", Path: "/a|/b", Decision: "allow"},
	}}
	if diff := cmp.Diff(want, page); diff != "" {
		t.Errorf("activity (-want +got):\n%s", diff)
	}

	// The history API and the history action count them.
	rec := d.admin("GET", "/v1/subjects/users/42/history", "")
	var h audit.HistoryPage
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil || len(h.Impersonations) != 1 || h.Impersonations[0].Requests == nil || *h.Impersonations[0].Requests != 4 {
		t.Errorf("history: %d %s, want requests 4", rec.Code, rec.Body.String())
	}
	if rec := d.review(featAda, "/forest/actions/impersonation-history", "users", "42"); !strings.Contains(rec.Body.String(), `<td>live</td><td>4</td></tr>`) {
		t.Errorf("history action: %s, want the count 4 in its row", rec.Body.String())
	}

	// The end event carries the count.
	if rec := d.do("POST", "/impersonation/logout", "", nil, c); rec.Code != 204 {
		t.Fatalf("logout: %d", rec.Code)
	}
	var ended *audit.Event
	for _, e := range d.events() {
		if e.Type == audit.Ended && e.SessionID == sid {
			ended = &e
		}
	}
	if ended == nil || ended.Requests == nil || *ended.Requests != 4 {
		t.Errorf("session.ended = %+v, want requests 4", ended)
	}
	// An ended session's trail stays readable; after the end, nothing is
	// recorded (the check answers 401).
	if got := d.forwardAuth(c, map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/after"}); got != 401 {
		t.Errorf("after logout: %d", got)
	}
	if page := d.activity(sid, 4); page.Requests != 4 {
		t.Errorf("after the end: %d requests, want 4", page.Requests)
	}

	for path, code := range map[string]int{
		"/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA/activity":          404, // nothing recorded, not live
		"/v1/sessions/a:b/activity":                             400,
		"/v1/sessions/" + strings.Repeat("a", 65) + "/activity": 400,
	} {
		if rec := d.admin("GET", path, ""); rec.Code != code {
			t.Errorf("%s: %d %s, want %d", path, rec.Code, rec.Body.String(), code)
		}
	}
	if rec := d.do("GET", "/v1/sessions/"+sid+"/activity", "", nil, nil); rec.Code != 401 {
		t.Errorf("without the admin token: %d", rec.Code)
	}
}

// TestActivityBound: past store.MaxActivity requests, a session's
// requests are counted, not kept.
func TestActivityBound(t *testing.T) {
	d := newDeployment(t, nil, withActivity)
	c := d.impersonate(featAda, "users", "42", "ticket 21: a busy session", "")
	sid := sidOf(t, d, c)
	n := store.MaxActivity + 25
	for i := range n {
		if got := d.forwardAuth(c, map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": fmt.Sprint("/p/", i)}); got != 200 {
			t.Fatalf("request %d: %d", i, got)
		}
	}
	page := d.activity(sid, int64(n))
	if page.Requests != int64(n) || len(page.Entries) != store.MaxActivity || !page.Truncated {
		t.Fatalf("activity: %d requests, %d entries, truncated %v; want %d, %d, true", page.Requests, len(page.Entries), page.Truncated, n, store.MaxActivity)
	}
	if first, last := page.Entries[0].Path, page.Entries[store.MaxActivity-1].Path; first != "/p/0" || last != fmt.Sprint("/p/", store.MaxActivity-1) {
		t.Errorf("kept %s … %s, want the first %d", first, last, store.MaxActivity)
	}
}
