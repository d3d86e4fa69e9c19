package notify_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/notify"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

// TestOutage: the receiver answers 503 to its first attempts, then 200.
// Every event is delivered once it is back, none is lost, each retry
// carries the first attempt's webhook-id (and a valid signature), the
// distinct ids delivered are exactly the events appended, the attempts are
// counted, and the lag rises during the outage and falls back to 0.
func TestOutage(t *testing.T) {
	t.Parallel()
	st := openStores(t, redistest.StartServer(t), 1)[0]
	var mu sync.Mutex
	var first time.Time
	rc := newReceiver(t, func(int, string, *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		if first.IsZero() {
			first = time.Now()
		}
		if time.Since(first) < 700*time.Millisecond { // down for 0.7s
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	reg := prometheus.NewRegistry()
	start(t, notify.Options{Config: config(t, "", rc), Store: st, Metrics: notify.NewMetrics(reg),
		Schedule: []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond, 320 * time.Millisecond, 640 * time.Millisecond}})
	waitFor(2*time.Second, func() bool { // the group exists once Run started
		_, err := st.NotifyPending(context.Background())
		return err == nil
	})
	ids := appendEvents(t, st, audit.Minted, 5)
	if !waitFor(3*time.Second, func() bool { return metric(t, reg, "impersonator_notify_lag_seconds", "") > 0 }) {
		t.Error("the lag metric never rose during the outage")
	}
	if !waitFor(10*time.Second, func() bool { return sameSet(rc.delivered(), ids) }) {
		t.Fatalf("delivered %v, want each of %v", rc.delivered(), ids)
	}
	waitAcked(t, st, 5*time.Second)
	rc.check()
	retried := 0
	for id, n := range rc.attempts() {
		if !strings.HasPrefix(id, "evt_") {
			t.Errorf("webhook-id %q is not an event id", id)
		}
		if n > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Error("no event was retried: the outage was not exercised")
	}
	for id, n := range rc.delivered() {
		if n != 1 {
			t.Errorf("event %s delivered %d times, want once", id, n)
		}
	}
	failures := 0
	for _, d := range rc.deliveries() {
		if d.status != http.StatusOK {
			failures++
		}
	}
	if got := metric(t, reg, "impersonator_notify_deliveries_total", notify.ResultFailure); got != float64(failures) || failures < len(ids) {
		t.Errorf("failed attempts counted = %v, want the %d the receiver refused", got, failures)
	}
	if got := metric(t, reg, "impersonator_notify_deliveries_total", notify.ResultSuccess); got != float64(len(ids)) {
		t.Errorf("successful attempts counted = %v, want %d", got, len(ids))
	}
	if !waitFor(3*time.Second, func() bool { return metric(t, reg, "impersonator_notify_lag_seconds", "") == 0 }) {
		t.Error("the lag metric did not fall back to 0")
	}
	// The payload is the Standard Webhooks one, data the stored event.
	var p struct {
		Type      string
		Timestamp time.Time
		Data      audit.Event
	}
	d := rc.deliveries()[0]
	if err := json.Unmarshal(d.body, &p); err != nil || p.Type != string(audit.Minted) || p.Data.ID != d.id || p.Timestamp.IsZero() || !p.Timestamp.Equal(p.Data.Time) {
		t.Errorf("payload %s: %+v, %v", d.body, p, err)
	}
}

// TestRetryStateSurvivesRestart: an instance that failed an attempt and
// stopped leaves its retry state in Redis; the instance that claims the
// entry goes on from it: with a schedule of two retries, three attempts in
// all are made across both instances before the dead letter, not more.
func TestRetryStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	sts := openStores(t, redistest.StartServer(t), 2)
	rc := newReceiver(t, func(int, string, *http.Request) int { return http.StatusInternalServerError })
	schedule := []time.Duration{50 * time.Millisecond, 400 * time.Millisecond}
	cfg := config(t, "", rc)
	a := start(t, notify.Options{Config: cfg, Store: sts[0], Schedule: schedule, MinIdle: 200 * time.Millisecond})
	waitFor(2*time.Second, func() bool { _, err := sts[0].NotifyPending(context.Background()); return err == nil })
	ids := appendEvents(t, sts[0], audit.Denied, 1)
	recs, err := sts[0].Events(context.Background(), "-", "+", 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("events %v, %v", recs, err)
	}
	// Stop once the second failure is recorded in Redis.
	if !waitFor(3*time.Second, func() bool {
		s, err := sts[0].NotifyStates(context.Background(), recs[0].ID)
		return err == nil && s[cfg.Targets[0].ID].Attempts == 2
	}) {
		t.Fatalf("attempts before the restart = %v, want 2 recorded", rc.attempts())
	}
	a.stop(t)
	reg := prometheus.NewRegistry()
	start(t, notify.Options{Config: cfg, Store: sts[1], Schedule: schedule, MinIdle: 200 * time.Millisecond, Metrics: notify.NewMetrics(reg)})
	if !waitFor(5*time.Second, func() bool { return metric(t, reg, "impersonator_notify_dead_letters_total", "") == 1 }) {
		t.Fatalf("no dead letter after the restart; attempts %v", rc.attempts())
	}
	time.Sleep(100 * time.Millisecond)
	if got := rc.attempts()[ids[0]]; got != 3 {
		t.Errorf("attempts across the restart = %d, want 3 (1 + the schedule's 2 retries)", got)
	}
	if got := metric(t, reg, "impersonator_notify_deliveries_total", notify.ResultFailure); got != 1 {
		t.Errorf("the second instance made %v attempts, want 1", got)
	}
	waitAcked(t, sts[1], 2*time.Second)
	rc.check()
}

// TestTwoInstances: two notifiers sharing the group deliver each event
// exactly once when nothing crashes.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	sts := openStores(t, redistest.StartServer(t), 2)
	rc := newReceiver(t, nil)
	cfg := config(t, "", rc)
	for _, st := range sts {
		// A stall of MinIdle less a heartbeat (MinIdle/3) lets the other
		// instance claim an entry being delivered: at least once, not
		// exactly once. 1s keeps a loaded -race run clear of that.
		start(t, notify.Options{Config: cfg, Store: st, MinIdle: time.Second})
	}
	waitFor(2*time.Second, func() bool { _, err := sts[0].NotifyPending(context.Background()); return err == nil })
	var ids []string
	for i := range 40 {
		ids = append(ids, appendEvents(t, sts[i%2], audit.Minted, 1)...)
	}
	if !waitFor(5*time.Second, func() bool { return sameSet(rc.delivered(), ids) }) {
		t.Fatalf("delivered %d distinct events, want %d", len(rc.delivered()), len(ids))
	}
	waitAcked(t, sts[0], 2*time.Second)
	time.Sleep(1200 * time.Millisecond) // past MinIdle: nothing is claimed and sent again
	for id, n := range rc.attempts() {
		if n != 1 {
			t.Errorf("event %s sent %d times, want exactly once", id, n)
		}
	}
	if got := len(rc.deliveries()); got != len(ids) {
		t.Errorf("%d requests for %d events", got, len(ids))
	}
	rc.check()
}

// crashed is a store as a killed instance leaves it: it neither hands its
// entries back nor leaves the group.
type crashed struct{ *store.Store }

func (crashed) NotifyRelease(context.Context, string, []string, time.Duration) error { return nil }
func (crashed) NotifyLeave(context.Context, string) error                            { return nil }

// TestCrashedInstanceClaimed: an instance that dies mid-delivery (its
// context ends while the receiver has not answered, so nothing is
// acknowledged, and it hands nothing back) leaves its entries pending; the
// other instance claims them once they are MinIdle old and delivers them,
// with the same webhook-ids.
func TestCrashedInstanceClaimed(t *testing.T) {
	t.Parallel()
	testStoppedInstance(t, true)
}

// TestStoppedInstanceHandsBack: an instance stopped cleanly mid-delivery
// hands its entries back, and the other instance takes them on its first
// claim instead of waiting MinIdle (5 s here).
func TestStoppedInstanceHandsBack(t *testing.T) {
	t.Parallel()
	testStoppedInstance(t, false)
}

func testStoppedInstance(t *testing.T, crash bool) {
	sts := openStores(t, redistest.StartServer(t), 2)
	var hang atomic.Bool
	hang.Store(true)
	arrived := make(chan struct{}, 10)
	rc := newReceiver(t, func(_ int, _ string, r *http.Request) int {
		if hang.Load() {
			arrived <- struct{}{}
			<-r.Context().Done() // until the sender gives up
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	cfg := config(t, "", rc)
	minIdle := 300 * time.Millisecond
	var sa notify.Store = sts[0]
	if crash {
		sa = crashed{sts[0]}
	} else {
		minIdle = 5 * time.Second
	}
	a := start(t, notify.Options{Config: cfg, Store: sa, Consumer: "a", Workers: 1, MinIdle: minIdle})
	waitFor(2*time.Second, func() bool { _, err := sts[0].NotifyPending(context.Background()); return err == nil })
	ids := appendEvents(t, sts[0], audit.Redeemed, 3)
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("instance a never delivered")
	}
	var p map[string]int64
	if !waitFor(3*time.Second, func() bool { p, _ = sts[0].NotifyPending(context.Background()); return p["a"] == 3 }) {
		t.Fatalf("pending with a = %v; want a's 3 entries", p)
	}
	a.stop(t) // before any XACK
	p, err := sts[0].NotifyPending(context.Background())
	if err != nil || p["a"] != 3 {
		t.Fatalf("pending after a stopped = %v, %v; want a's 3 entries", p, err)
	}
	hang.Store(false)
	began := time.Now()
	start(t, notify.Options{Config: cfg, Store: sts[1], Consumer: "b", MinIdle: minIdle})
	if !waitFor(5*time.Second, func() bool { return sameSet(rc.delivered(), ids) }) {
		t.Fatalf("delivered %v after the claim, want %v", rc.delivered(), ids)
	}
	if took := time.Since(began); !crash && took > 2*time.Second {
		t.Errorf("handed-back entries were delivered after %s, want at b's first claim", took)
	}
	waitAcked(t, sts[1], 2*time.Second)
	rc.check()
}

// TestDeadLetter: a URL that never succeeds is dead-lettered after the
// whole schedule (1 + 4 attempts), once per event, with its id, redacted
// URL and last error, and counted; the other URL gets each event exactly
// once, and the entries are acknowledged once both are final.
func TestDeadLetter(t *testing.T) {
	t.Parallel()
	st := openStores(t, redistest.StartServer(t), 1)[0]
	bad := newReceiver(t, func(int, string, *http.Request) int { return http.StatusBadGateway })
	good := newReceiver(t, nil)
	reg := prometheus.NewRegistry()
	cfg := config(t, "", bad, good)
	start(t, notify.Options{Config: cfg, Store: st, Metrics: notify.NewMetrics(reg)})
	waitFor(2*time.Second, func() bool { _, err := st.NotifyPending(context.Background()); return err == nil })
	ids := appendEvents(t, st, audit.Ended, 2)
	var dls []store.DeadLetter
	if !waitFor(5*time.Second, func() bool {
		dls, _ = st.DeadLetters(context.Background(), 10)
		return len(dls) == 2
	}) {
		t.Fatalf("dead letters = %+v, want 2", dls)
	}
	waitAcked(t, st, 2*time.Second)
	for _, d := range dls {
		if !sameSet(map[string]int{d.EventID: 1}, []string{d.EventID}) || (d.EventID != ids[0] && d.EventID != ids[1]) {
			t.Errorf("dead letter of unknown event %q", d.EventID)
		}
		if d.Attempts != 5 || d.Error != "HTTP 502 Bad Gateway" || d.Target != cfg.Targets[0].ID || d.StreamID == "" {
			t.Errorf("dead letter = %+v", d)
		}
		if !strings.HasSuffix(d.URL, "/…") || !strings.HasPrefix(d.URL, "http://127.0.0.1:") {
			t.Errorf("dead letter URL %q, want the redacted form", d.URL)
		}
	}
	for id, n := range bad.attempts() {
		if n != 5 {
			t.Errorf("bad URL got %d attempts of %s, want 5", n, id)
		}
	}
	if got := good.delivered(); !sameSet(got, ids) || got[ids[0]] != 1 || got[ids[1]] != 1 {
		t.Errorf("good URL got %v, want each event once", got)
	}
	if got := metric(t, reg, "impersonator_notify_dead_letters_total", ""); got != 2 {
		t.Errorf("dead letters counted = %v, want 2", got)
	}
	if got := metric(t, reg, "impersonator_notify_deliveries_total", notify.ResultFailure); got != 10 {
		t.Errorf("failed attempts counted = %v, want 10", got)
	}
	bad.check()
	good.check()
}

// TestEventFilter: only the selected types are sent; the others are
// acknowledged without a request.
func TestEventFilter(t *testing.T) {
	t.Parallel()
	st := openStores(t, redistest.StartServer(t), 1)[0]
	rc := newReceiver(t, nil)
	start(t, notify.Options{Config: config(t, "impersonation.denied, session.revoked", rc), Store: st})
	waitFor(2*time.Second, func() bool { _, err := st.NotifyPending(context.Background()); return err == nil })
	appendEvents(t, st, audit.Minted, 2)
	want := appendEvents(t, st, audit.Denied, 1)
	appendEvents(t, st, audit.Redeemed, 2)
	want = append(want, appendEvents(t, st, audit.Revoked, 1)...)
	if !waitFor(5*time.Second, func() bool { return sameSet(rc.delivered(), want) }) {
		t.Fatalf("delivered %v, want %v", rc.delivered(), want)
	}
	waitAcked(t, st, 2*time.Second)
	if got := len(rc.deliveries()); got != 2 {
		t.Errorf("%d requests, want 2 (the denied and the revoked)", got)
	}
	rc.check()
}

// TestSlackDelivery: a slack+http URL receives {"text": ...} without the
// webhook headers, at the URL without its slack+ prefix.
func TestSlackDelivery(t *testing.T) {
	t.Parallel()
	st := openStores(t, redistest.StartServer(t), 1)[0]
	rc := newReceiver(t, nil)
	rc.slack = true
	var paths sync.Map
	rc.answer = func(_ int, _ string, r *http.Request) int { paths.Store(r.URL.Path, true); return http.StatusOK }
	cfg, errs := notify.ParseConfig("slack+"+rc.srv.URL+"/services/T0/B0/secret", "", "")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	start(t, notify.Options{Config: cfg, Store: st})
	waitFor(2*time.Second, func() bool { _, err := st.NotifyPending(context.Background()); return err == nil })
	appendEvents(t, st, audit.Minted, 1)
	if !waitFor(5*time.Second, func() bool { return len(rc.deliveries()) == 1 }) {
		t.Fatal("nothing reached the Slack URL")
	}
	rc.check()
	var s struct{ Text string }
	_ = json.Unmarshal(rc.deliveries()[0].body, &s)
	if s.Text != "ada@example.com started impersonating users 42: ticket 1234" {
		t.Errorf("Slack text = %q", s.Text)
	}
	if _, ok := paths.Load("/services/T0/B0/secret"); !ok {
		t.Error("the Slack URL's path was not kept")
	}
	waitAcked(t, st, 2*time.Second)
}

// TestMintNotSlowed: with the receiver hanging, appending events (what a
// mint or a login does) returns as promptly as with no notifier at all.
func TestMintNotSlowed(t *testing.T) {
	t.Parallel()
	st := openStores(t, redistest.StartServer(t), 1)[0]
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	rc := newReceiver(t, func(_ int, _ string, r *http.Request) int {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	r := start(t, notify.Options{Config: config(t, "", rc), Store: st, Workers: 2})
	waitFor(2*time.Second, func() bool { _, err := st.NotifyPending(context.Background()); return err == nil })
	appendEvents(t, st, audit.Minted, 1)
	if !waitFor(5*time.Second, func() bool { return hanging(rc) }) {
		t.Fatal("the notifier never reached the receiver")
	}
	var slowest time.Duration
	began := time.Now()
	for range 50 {
		t0 := time.Now()
		appendEvents(t, st, audit.Minted, 1)
		slowest = max(slowest, time.Since(t0))
	}
	// Coupled to the receiver, an append would wait for it: forever, or
	// the client's 10 s timeout. The bounds leave room for a loaded -race
	// run only.
	if total := time.Since(began); total > 5*time.Second || slowest > 2*time.Second {
		t.Errorf("50 appends took %s (slowest %s) while the receiver hangs", total, slowest)
	}
	r.stop(t)
	once.Do(func() { close(release) })
}

func hanging(rc *receiver) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.count > 0
}

// TestSignature: Sign is the Standard Webhooks signature, as the official
// library computes it, for a raw key and a whsec_ one.
func TestSignature(t *testing.T) {
	body := []byte(`{"type":"impersonation.minted"}`)
	ts := time.Unix(1700000000, 0)
	for _, secret := range []string{testSecret, "a-raw-secret-of-thirty-two-chars-or-more"} {
		cfg, errs := notify.ParseConfig("https://example.com/hook", secret, "")
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		got := notify.Sign(cfg.Key, "evt_1", ts.Unix(), body)
		wh := libraryFor(t, secret)
		want, err := wh.Sign("evt_1", ts, body)
		if err != nil || got != want {
			t.Errorf("Sign = %q, library says %q (%v)", got, want, err)
		}
	}
}

func libraryFor(t *testing.T, secret string) interface {
	Sign(string, time.Time, []byte) (string, error)
} {
	t.Helper()
	if strings.HasPrefix(secret, notify.SecretPrefix) {
		wh, err := newWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		return wh
	}
	wh, err := newWebhookRaw([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return wh
}
