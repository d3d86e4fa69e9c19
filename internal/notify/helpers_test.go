package notify_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/notify"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

// testKey is the signing key of these tests, configured in the Standard
// Webhooks form (whsec_ + base64) so the receiver's library decodes it on
// its own.
var testKey = []byte("0123456789abcdef0123456789abcdef")

var testSecret = notify.SecretPrefix + base64.StdEncoding.EncodeToString(testKey)

// delivery is one request a receiver got.
type delivery struct {
	id     string // webhook-id
	ts     string
	status int
	body   []byte
}

// receiver is a webhook endpoint that checks every signature with the
// official Standard Webhooks Go library (an implementation independent of
// the one under test) and answers what answer says.
type receiver struct {
	t      testing.TB
	srv    *httptest.Server
	wh     *standardwebhooks.Webhook
	slack  bool
	answer func(n int, id string, r *http.Request) int // n: 1-based request count

	mu    sync.Mutex
	got   []delivery
	bad   []string
	count int
}

func newReceiver(t testing.TB, answer func(n int, id string, r *http.Request) int) *receiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{t: t, wh: wh, answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	id := r.Header.Get(notify.HeaderID)
	rc.mu.Lock()
	rc.count++
	n := rc.count
	switch {
	case r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json":
		rc.bad = append(rc.bad, fmt.Sprintf("%s with Content-Type %q", r.Method, r.Header.Get("Content-Type")))
	case rc.slack:
		var s struct{ Text string }
		if id != "" || r.Header.Get(notify.HeaderSignature) != "" || json.Unmarshal(body, &s) != nil || s.Text == "" {
			rc.bad = append(rc.bad, "slack request: "+string(body))
		}
	default:
		if err := rc.wh.Verify(body, r.Header); err != nil {
			rc.bad = append(rc.bad, fmt.Sprintf("signature of %s: %v", id, err))
		}
	}
	rc.mu.Unlock()
	status := http.StatusOK
	if rc.answer != nil {
		status = rc.answer(n, id, r)
	}
	rc.mu.Lock()
	rc.got = append(rc.got, delivery{id: id, ts: r.Header.Get(notify.HeaderTimestamp), status: status, body: body})
	rc.mu.Unlock()
	w.WriteHeader(status)
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// delivered counts the 2xx answers per webhook-id.
func (rc *receiver) delivered() map[string]int {
	out := map[string]int{}
	for _, d := range rc.deliveries() {
		if d.status/100 == 2 {
			out[d.id]++
		}
	}
	return out
}

// attempts counts every request per webhook-id.
func (rc *receiver) attempts() map[string]int {
	out := map[string]int{}
	for _, d := range rc.deliveries() {
		out[d.id]++
	}
	return out
}

// check fails the test for every request that was not well formed and
// correctly signed.
func (rc *receiver) check() {
	rc.t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, b := range rc.bad {
		rc.t.Error(b)
	}
}

// config returns a configuration of the receivers' URLs with testSecret.
func config(t testing.TB, events string, rcs ...*receiver) notify.Config {
	t.Helper()
	var urls []string
	for _, rc := range rcs {
		u := rc.srv.URL
		if rc.slack {
			u = "slack+" + u + "/services/T0/B0/secret"
		}
		urls = append(urls, u)
	}
	c, errs := notify.ParseConfig(strings.Join(urls, ","), testSecret, events)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return c
}

// openStores returns n stores (n instances) sharing one fresh prefix on
// srv.
func openStores(t testing.TB, srv *redistest.Server, n int) []*store.Store {
	t.Helper()
	prefix := redistest.Prefix()
	out := make([]*store.Store, n)
	for i := range out {
		st, err := store.Open(srv.URL(), store.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		out[i] = st
	}
	return out
}

// fast is the test scale: milliseconds where production has minutes.
func fast(o notify.Options) notify.Options {
	if o.Schedule == nil {
		o.Schedule = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond}
	}
	if o.MinIdle == 0 {
		o.MinIdle = 300 * time.Millisecond
	}
	o.Poll = 20 * time.Millisecond
	return o
}

// running is a Notifier started by a test.
type running struct {
	n      *notify.Notifier
	cancel context.CancelFunc
	done   chan struct{}
}

// stop cancels the notifier and waits for Run to return.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context ending")
	}
}

func start(t testing.TB, o notify.Options) *running {
	t.Helper()
	n, err := notify.New(fast(o))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{n: n, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); n.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// appendEvents appends n events of type typ (as a mint does) and returns
// their ids.
func appendEvents(t testing.TB, st *store.Store, typ audit.Type, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		ev, err := audit.Encoder{}.Encode(audit.Event{Type: typ, Actor: audit.Actor{ID: "1001", Email: "ada@example.com"},
			Subject: audit.Subject{Collection: "users", ID: fmt.Sprint(42 + i)}, Reason: "ticket 1234", TokenID: "jti-" + fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		var e audit.Event
		_ = json.Unmarshal(ev.JSON, &e)
		if _, err := st.Append(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// waitFor polls cond every 10ms up to d; false when it never held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// waitGroup waits until the group has nothing pending (every entry
// acknowledged).
func waitAcked(t testing.TB, st *store.Store, d time.Duration) {
	t.Helper()
	var last map[string]int64
	if !waitFor(d, func() bool {
		p, err := st.NotifyPending(context.Background())
		last = p
		return err == nil && len(p) == 0
	}) {
		t.Fatalf("entries still pending after %s: %v", d, last)
	}
}

// metric reads one sample of reg: name and, for a vector, its one label
// value ("" for none).
func metric(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && !hasLabel(m, label) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{%s}", name, label)
	return 0
}

func hasLabel(m *dto.Metric, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetValue() == v {
			return true
		}
	}
	return false
}

func sameSet(got map[string]int, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, id := range want {
		if got[id] == 0 {
			return false
		}
	}
	return true
}
