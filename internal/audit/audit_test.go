package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
	"github.com/impersonator/impersonator/internal/token/tokentest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

type backend struct {
	name string
	url  string
}

func backends(t *testing.T) []backend {
	m, _ := redistest.Embedded(t)
	return []backend{{"embedded", "redis://" + m.Addr()}, {"redis-server", redistest.StartServer(t).URL()}}
}

// open returns a store with a fresh prefix on url, and the log over it.
func open(t *testing.T, url string, now func() time.Time) (*store.Store, *audit.Log, string) {
	t.Helper()
	prefix := redistest.Prefix()
	st, err := store.Open(url, store.Options{Prefix: prefix, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, audit.NewLog(st, now), prefix
}

var (
	ada   = audit.Actor{ID: "1001", Email: "ada@example.com", Team: "Support"}
	grace = audit.Actor{ID: "2002", Email: "grace@example.com"}
)

func ev(typ audit.Type, actor audit.Actor, collection, id string) audit.Event {
	return audit.Event{Type: typ, Actor: actor, Subject: audit.Subject{Collection: collection, ID: id}}
}

func appendEv(t *testing.T, st *store.Store, e audit.Event) string {
	t.Helper()
	enc, err := audit.Encoder{}.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	id, err := st.Append(context.Background(), enc)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestQueryFilters(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st, log, _ := open(t, b.url, time.Now)
			requested := ev(audit.Minted, ada, "users", "7")
			requested.Requester = &audit.Actor{ID: "3003"}
			all := []audit.Event{
				ev(audit.Minted, ada, "users", "42"),
				ev(audit.Redeemed, ada, "users", "42"),
				ev(audit.Denied, grace, "users", "1"),
				ev(audit.Minted, grace, "companies", "42"),
				requested,
			}
			for i := range all {
				all[i].ID = fmt.Sprintf("e%d", i)
				appendEv(t, st, all[i])
			}
			ids := func(f audit.Filter) []string {
				p, err := log.Query(ctx, f, 0, "")
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, e := range p.Events {
					out = append(out, e.ID)
				}
				return out
			}
			for _, tc := range []struct {
				name string
				f    audit.Filter
				want []string
			}{
				{"everything, newest first", audit.Filter{}, []string{"e4", "e3", "e2", "e1", "e0"}},
				{"actor by id", audit.Filter{Actor: "1001"}, []string{"e4", "e1", "e0"}},
				{"actor by email, any case", audit.Filter{Actor: "GRACE@example.com"}, []string{"e3", "e2"}},
				{"actor as requester", audit.Filter{Actor: "3003"}, []string{"e4"}},
				{"subject id, any collection", audit.Filter{Subject: "42"}, []string{"e3", "e1", "e0"}},
				{"subject collection:id", audit.Filter{Subject: "users:42"}, []string{"e1", "e0"}},
				{"type", audit.Filter{Type: audit.Minted}, []string{"e4", "e3", "e0"}},
				{"combined", audit.Filter{Actor: "ada@example.com", Type: audit.Minted, Subject: "users:42"}, []string{"e0"}},
				{"nothing", audit.Filter{Actor: "nobody"}, nil},
			} {
				if diff := cmp.Diff(tc.want, ids(tc.f)); diff != "" {
					t.Errorf("%s (-want +got):\n%s", tc.name, diff)
				}
			}
		})
	}
}

// TestTimeWindow: since and until are the stream's own time order, so a
// window reads its own entries and a page of it is never empty while
// matching events exist.
func TestTimeWindow(t *testing.T) {
	ctx := context.Background()
	st, log, _ := open(t, redistest.StartServer(t).URL(), time.Now)
	var at []time.Time
	for i := range 5 {
		e := ev(audit.Minted, ada, "users", "42")
		e.ID = fmt.Sprintf("e%d", i)
		id := appendEv(t, st, e)
		ms := strings.SplitN(id, "-", 2)[0]
		var n int64
		fmt.Sscan(ms, &n)
		at = append(at, time.UnixMilli(n))
		time.Sleep(5 * time.Millisecond)
	}
	for i := range 200 { // later events the window must not scan into
		e := ev(audit.Minted, grace, "users", "7")
		e.ID = fmt.Sprintf("late%d", i)
		appendEv(t, st, e)
	}
	ids := func(f audit.Filter, limit int) []string {
		p, err := log.Query(ctx, f, limit, "")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range p.Events {
			out = append(out, e.ID)
		}
		return out
	}
	if got, want := ids(audit.Filter{Since: at[1], Until: at[3]}, 10), []string{"e2", "e1"}; !cmp.Equal(got, want) {
		t.Errorf("since e1 until e3 = %v, want %v", got, want)
	}
	if got, want := ids(audit.Filter{Until: at[2]}, 10), []string{"e1", "e0"}; !cmp.Equal(got, want) {
		t.Errorf("until e2, limit 10 = %v, want %v (never an empty page)", got, want)
	}
}

// TestPaginationUnderConcurrentAppends: paging through the log while other
// events are appended returns every older event exactly once, in order.
func TestPaginationUnderConcurrentAppends(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st, log, _ := open(t, b.url, time.Now)
			const n = 60
			for i := range n {
				e := ev(audit.Minted, ada, "users", "42")
				e.ID = fmt.Sprintf("old-%02d", i)
				appendEv(t, st, e)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					e := ev(audit.Redeemed, ada, "users", "7")
					e.ID = fmt.Sprintf("new-%d", i)
					appendEv(t, st, e)
				}
			})
			var seen []string
			cursor := ""
			first := true
			for pages := 0; ; pages++ {
				p, err := log.Query(ctx, audit.Filter{Subject: "users:42"}, 7, cursor)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range p.Events {
					seen = append(seen, e.ID)
				}
				if p.NextCursor == nil {
					break
				}
				if first {
					first = false
				}
				cursor = *p.NextCursor
				if pages > 50 {
					t.Fatal("pagination does not end")
				}
			}
			close(stop)
			wg.Wait()
			var want []string
			for i := n - 1; i >= 0; i-- {
				want = append(want, fmt.Sprintf("old-%02d", i))
			}
			if diff := cmp.Diff(want, seen); diff != "" {
				t.Errorf("paged events (-want +got):\n%s", diff)
			}
			if _, err := log.Query(ctx, audit.Filter{}, 5, "not-a-cursor"); err == nil {
				t.Error("a malformed cursor was accepted")
			}
		})
	}
}

// tamperWorld is a log on a real redis-server with explicit stream ids,
// checkpointed in two rounds, with two recent events after the last
// checkpoint. Its events were appended ten minutes ago; the checkpoint
// interval is one minute.
type tamperWorld struct {
	rdb      *redis.Client
	st       *store.Store
	log      *audit.Log
	keys     *token.Keyset
	verifier audit.SignatureVerifier
	stream   string // what an attacker with Redis access knows of the layout
	cps      string
	ids      []string
	base     int64
}

const interval = time.Minute

func newTamperWorld(t *testing.T) *tamperWorld {
	t.Helper()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	st, log, prefix := open(t, srv.URL(), time.Now)
	w := &tamperWorld{rdb: rdb, st: st, log: log, stream: prefix + ":audit", cps: prefix + ":audit:checkpoints"}
	w.keys = tokentest.Keyset(t, "")
	w.verifier = w.keys
	w.base = time.Now().Add(-10 * time.Minute).UnixMilli()
	for round, upto := range []int{4, 8} {
		for i := len(w.ids); i < upto; i++ {
			w.add(t, i, w.base+int64(i)*1000)
		}
		if sums, err := w.log.CatchUp(context.Background(), w.keys, 0); err != nil || len(sums) != 1 {
			t.Fatalf("checkpoint round %d: %v, %v", round, sums, err)
		}
	}
	now := time.Now().UnixMilli()
	w.add(t, 8, now-2)
	w.add(t, 9, now-1)
	return w
}

func (w *tamperWorld) add(t *testing.T, i int, ms int64) {
	e := ev(audit.Minted, ada, "users", fmt.Sprint(i))
	e.ID, e.Reason, e.Time = fmt.Sprintf("evt-%d", i), "ticket 1234", time.UnixMilli(ms).UTC()
	js, _ := json.Marshal(e)
	id := fmt.Sprintf("%d-0", ms)
	if err := w.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: w.stream, ID: id, Values: []string{"e", string(js)}}).Err(); err != nil {
		t.Fatal(err)
	}
	w.ids = append(w.ids, id)
}

func (w *tamperWorld) verify(t *testing.T, o audit.VerifyOptions) audit.Report {
	t.Helper()
	if o.MaxUncovered == 0 {
		o.MaxUncovered = 2 * interval
	}
	r, err := w.log.Verify(context.Background(), w.verifier, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type rawEntry struct{ id, e string }

func (w *tamperWorld) entries(t *testing.T) []rawEntry {
	msgs, err := w.rdb.XRange(context.Background(), w.stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []rawEntry
	for _, m := range msgs {
		out = append(out, rawEntry{m.ID, m.Values["e"].(string)})
	}
	return out
}

// rewrite replaces the whole stream, as an attacker with write access can.
func (w *tamperWorld) rewrite(t *testing.T, entries []rawEntry) {
	ctx := context.Background()
	if err := w.rdb.Del(ctx, w.stream).Err(); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := w.rdb.XAdd(ctx, &redis.XAddArgs{Stream: w.stream, ID: e.id, Values: []string{"e", e.e}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTamperEvidence performs each tampering of the README's table against
// a real redis-server and checks what verify reports. Rows marked
// afterIntervals also let three checkpoint intervals pass, with the
// checkpointer running, and check the tampering is still reported.
func TestTamperEvidence(t *testing.T) {
	for _, tc := range []struct {
		name           string
		tamper         func(t *testing.T, w *tamperWorld)
		firstBad       func(w *tamperWorld) string // stream id; nil: intact
		problem        string
		afterIntervals bool
	}{
		{"untouched", func(*testing.T, *tamperWorld) {}, nil, "", false},
		{"modify a field", func(t *testing.T, w *tamperWorld) {
			es := w.entries(t)
			es[5].e = strings.Replace(es[5].e, "ticket 1234", "ticket 9999", 1)
			w.rewrite(t, es)
		}, func(w *tamperWorld) string { return w.ids[5] }, "modified", false},
		{"delete an event", func(t *testing.T, w *tamperWorld) {
			if err := w.rdb.XDel(context.Background(), w.stream, w.ids[2]).Err(); err != nil {
				t.Fatal(err)
			}
		}, func(w *tamperWorld) string { return w.ids[2] }, "deleted", false},
		{"reorder two events", func(t *testing.T, w *tamperWorld) {
			es := w.entries(t)
			es[1].e, es[2].e = es[2].e, es[1].e
			w.rewrite(t, es)
		}, func(w *tamperWorld) string { return w.ids[1] }, "modified", false},
		{"insert a forged event", func(t *testing.T, w *tamperWorld) {
			es := w.entries(t)
			forged := rawEntry{fmt.Sprintf("%d-1", w.base+5000), strings.Replace(es[5].e, "evt-5", "evt-forged", 1)}
			w.rewrite(t, append(es[:6], append([]rawEntry{forged}, es[6:]...)...))
		}, func(w *tamperWorld) string { return fmt.Sprintf("%d-1", w.base+5000) }, "inserted", false},
		{"delete the first checkpoint", func(t *testing.T, w *tamperWorld) {
			w.deleteCheckpoint(t, 0)
		}, func(w *tamperWorld) string { return w.ids[0] }, "checkpoints before seq 2 are missing", true},
		{"delete a middle checkpoint", func(t *testing.T, w *tamperWorld) {
			if _, err := w.log.CatchUp(context.Background(), w.keys, 0); err != nil {
				t.Fatal(err)
			}
			w.deleteCheckpoint(t, 1)
		}, func(w *tamperWorld) string { return w.ids[8] }, "checkpoint chain broken between seq 1 and seq 3", false},
		{"alter a checkpoint to match a modified event", func(t *testing.T, w *tamperWorld) {
			es := w.entries(t)
			es[2].e = strings.Replace(es[2].e, "ticket 1234", "ticket 0000", 1)
			w.rewrite(t, es)
			w.editCheckpoint(t, 0, func(c *audit.Checkpoint) { c.Leaves[2].Hash = "recomputed-by-the-attacker" })
		}, func(w *tamperWorld) string { return w.ids[0] }, "invalid signature", false},
		{"delete every checkpoint", func(t *testing.T, w *tamperWorld) {
			w.deleteCheckpoint(t, 1)
			w.deleteCheckpoint(t, 0)
		}, func(w *tamperWorld) string { return "" }, "newest checkpoints were deleted", true},
		{"delete every checkpoint and the seal, then edit an event", func(t *testing.T, w *tamperWorld) {
			w.deleteCheckpoint(t, 1)
			w.deleteCheckpoint(t, 0)
			w.rdb.Del(context.Background(), w.cps[:len(w.cps)-len("checkpoints")]+"sealed")
			es := w.entries(t)
			es[3].e = strings.Replace(es[3].e, "ticket 1234", "ticket 0000", 1)
			w.rewrite(t, es)
		}, func(w *tamperWorld) string { return w.ids[0] }, "no checkpoint covers it", true},
		{"delete the newest checkpoint with one of its events", func(t *testing.T, w *tamperWorld) {
			w.deleteCheckpoint(t, 1)
			if err := w.rdb.XDel(context.Background(), w.stream, w.ids[7]).Err(); err != nil {
				t.Fatal(err)
			}
		}, func(w *tamperWorld) string { return "" }, "newest checkpoints were deleted", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newTamperWorld(t)
			tc.tamper(t, w)
			check := func(when string) {
				r := w.verify(t, audit.VerifyOptions{})
				if tc.firstBad == nil {
					if !r.OK || r.Verified != 8 || r.Uncovered != 2 || r.Checkpoints != 2 || r.TimeNotID != 0 {
						t.Errorf("%s: report = %+v, want ok with 8 verified, 2 uncovered, 2 checkpoints", when, r)
					}
					return
				}
				if r.OK || !r.Tampered || r.FirstBad != tc.firstBad(w) || !strings.Contains(r.Problem, tc.problem) {
					t.Errorf("%s: report = %+v, want tampered, first bad event %q and a problem mentioning %q", when, r, tc.firstBad(w), tc.problem)
				}
			}
			check("at once")
			if !tc.afterIntervals {
				return
			}
			// Three intervals later, with the checkpointer running: it must
			// refuse to sign the tampered history, and verify still fails.
			later := audit.NewLog(w.st, func() time.Time { return time.Now().Add(3 * interval) })
			alarm := false
			cp := audit.Checkpointer{Log: discard(), Signer: w.keys, Interval: interval, Alarm: func(on bool) { alarm = on }}
			for range 3 {
				cp.Once(context.Background(), later)
			}
			if !alarm {
				t.Errorf("the checkpointer signed over the tampering instead of raising its alarm")
			}
			check("after three intervals")
		})
	}
	rewriteRows(t)
}

// TestWitness: a chain rewritten or cut short is caught by comparing it
// with an export kept outside Redis.
func TestWitness(t *testing.T) {
	w := newTamperWorld(t)
	ctx := context.Background()
	sums, _, err := w.log.CheckpointsAfter(ctx, "", 100)
	if err != nil || len(sums) != 2 {
		t.Fatalf("checkpoints = %v, %v", sums, err)
	}
	var export strings.Builder
	for _, s := range sums {
		b, _ := json.Marshal(map[string]any{"checkpoint": s})
		export.WriteString(string(b) + "\n")
		export.WriteString(`{"stream_id":"1-0","id":"evt"}` + "\n")
	}
	wit, err := audit.ReadWitness(strings.NewReader(export.String()))
	if err != nil || len(wit) != 2 {
		t.Fatalf("ReadWitness = %v, %v", wit, err)
	}
	if r := w.verify(t, audit.VerifyOptions{Witness: wit}); !r.OK || r.Witnessed != 2 {
		t.Fatalf("untouched with its witness = %+v, want ok, 2 witnessed", r)
	}
	// The attacker deletes the newest checkpoint and its events, and the
	// seal too: nothing in Redis shows it, the witness does.
	w.deleteCheckpoint(t, 1)
	for _, id := range w.ids[4:] {
		w.rdb.XDel(ctx, w.stream, id)
	}
	w.rdb.Del(ctx, strings.TrimSuffix(w.cps, ":checkpoints")+":sealed")
	if r := w.verify(t, audit.VerifyOptions{}); !r.OK {
		t.Fatalf("without a witness, this cut is not expected to show: %+v", r)
	}
	r := w.verify(t, audit.VerifyOptions{Witness: wit})
	if r.OK || !r.Tampered || !strings.Contains(r.Problem, "chain is shorter") {
		t.Errorf("with the witness = %+v, want tampered: chain shorter", r)
	}
}

// TestVerifyWithPublicKeysOnly: the published JWKS is enough to verify; a
// checkpoint signed by a key the verifier lacks is an operational problem,
// never tampering.
func TestVerifyWithPublicKeysOnly(t *testing.T) {
	w := newTamperWorld(t)
	pub, err := token.ParseJWKS(w.keys.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	r, err := w.log.Verify(context.Background(), pub, audit.VerifyOptions{MaxUncovered: 2 * interval})
	if err != nil || !r.OK || r.Verified != 8 {
		t.Fatalf("with the JWKS = %+v, %v; want ok, 8 verified", r, err)
	}
	other, err := token.ParseJWKS(tokentest.Keyset(t, "").JWKS())
	if err != nil {
		t.Fatal(err)
	}
	r, err = w.log.Verify(context.Background(), other, audit.VerifyOptions{})
	if err != nil || r.OK || r.Tampered || !strings.Contains(r.Problem, "not tampering") {
		t.Errorf("with another key = %+v, %v; want not ok, not tampered, an unknown key", r, err)
	}
}

func (w *tamperWorld) checkpointIDs(t *testing.T) []redis.XMessage {
	msgs, err := w.rdb.XRange(context.Background(), w.cps, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func (w *tamperWorld) deleteCheckpoint(t *testing.T, i int) {
	if err := w.rdb.XDel(context.Background(), w.cps, w.checkpointIDs(t)[i].ID).Err(); err != nil {
		t.Fatal(err)
	}
}

// editCheckpoint rewrites checkpoint i in place (the attacker rebuilds the
// checkpoint stream with the same ids).
func (w *tamperWorld) editCheckpoint(t *testing.T, i int, edit func(*audit.Checkpoint)) {
	ctx := context.Background()
	msgs := w.checkpointIDs(t)
	if err := w.rdb.Del(ctx, w.cps).Err(); err != nil {
		t.Fatal(err)
	}
	for j, m := range msgs {
		raw := m.Values["c"].(string)
		if j == i {
			var c audit.Checkpoint
			if err := json.Unmarshal([]byte(raw), &c); err != nil {
				t.Fatal(err)
			}
			edit(&c)
			b, _ := json.Marshal(c)
			raw = string(b)
		}
		if err := w.rdb.XAdd(ctx, &redis.XAddArgs{Stream: w.cps, ID: m.ID, Values: []string{"c", raw}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRetentionKeepsVerification: trimming removes only whole checkpointed
// ranges, in one step, and the log still verifies from the anchor.
func TestRetentionKeepsVerification(t *testing.T) {
	w := newTamperWorld(t)
	ctx := context.Background()
	later := audit.NewLog(w.st, func() time.Time { return time.Now().Add(2 * time.Hour) })
	n, err := later.Trim(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n != 8 {
		t.Errorf("trimmed %d events, want the 8 checkpointed ones", n)
	}
	if got := len(w.entries(t)); got != 2 {
		t.Errorf("%d events left, want the 2 not yet checkpointed", got)
	}
	r := w.verify(t, audit.VerifyOptions{})
	if !r.OK || r.FromSeq != 2 || r.Uncovered != 2 {
		t.Errorf("report after trimming = %+v, want ok from seq 2 with 2 uncovered", r)
	}
	if _, err := w.log.CatchUp(ctx, w.keys, 2*interval); err != nil {
		t.Fatal(err)
	}
	r = w.verify(t, audit.VerifyOptions{})
	if !r.OK || r.Verified != 2 || r.Uncovered != 0 {
		t.Errorf("report after the next checkpoint = %+v, want ok with the 2 verified", r)
	}
}

// TestCheckpointersDoNotFork: two instances writing checkpoints at once
// build one chain.
func TestCheckpointersDoNotFork(t *testing.T) {
	w := newTamperWorld(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := w.log.CatchUp(ctx, w.keys, 2*interval); err != nil && !errors.Is(err, audit.ErrCheckpointRace) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	r := w.verify(t, audit.VerifyOptions{})
	if !r.OK || r.Checkpoints != 3 || r.Uncovered != 0 || r.Verified != 10 {
		t.Errorf("report = %+v, want one chain of 3 checkpoints covering all 10 events", r)
	}
}

// TestAcceptAfterAnOutage: events left uncovered for longer than two
// intervals (every instance down after appending) raise the alarm, and
// verify fails; an operator's signed statement covers them, verify lists
// it, and the checkpointer goes on. Accepting never papers over deleted
// checkpoints.
func TestAcceptAfterAnOutage(t *testing.T) {
	w := newTamperWorld(t)
	ctx := context.Background()
	// Two more events, ten minutes old, never covered.
	w.add(t, 10, time.Now().UnixMilli()+1)
	old := time.Now().Add(10 * time.Minute)
	later := audit.NewLog(w.st, func() time.Time { return old })
	if _, err := later.CatchUp(ctx, w.keys, 2*interval); !errors.Is(err, audit.ErrIntegrity) {
		t.Fatalf("checkpointer over 10-minute-old uncovered events = %v, want the integrity alarm", err)
	}
	if r, _ := later.Verify(ctx, w.keys, audit.VerifyOptions{MaxUncovered: 2 * interval}); r.OK {
		t.Fatalf("verify before accepting = %+v, want a failure", r)
	}
	sums, err := later.Accept(ctx, w.keys, "ops: all instances were down 2026-11-25 10:00-10:10, ticket OPS-1", operator)
	if err != nil || len(sums) != 1 || sums[0].Events != 4 {
		t.Fatalf("Accept = %+v, %v; want one checkpoint over the 3 uncovered events and the accept's own", sums, err)
	}
	r, err := later.Verify(ctx, w.keys, audit.VerifyOptions{MaxUncovered: 2 * interval})
	if err != nil || !r.OK || len(r.Accepted) != 1 || !strings.Contains(r.Accepted[0].Accepted, "OPS-1") {
		t.Errorf("verify after accepting = %+v, %v; want ok, listing the accepted checkpoint", r, err)
	}
	// Deleted checkpoints stay reported, whatever is accepted.
	w.deleteCheckpoint(t, 2)
	if _, err := later.Accept(ctx, w.keys, "hide it", operator); !errors.Is(err, audit.ErrIntegrity) {
		t.Errorf("Accept after a deleted checkpoint = %v, want the integrity refusal", err)
	}
}

// TestServiceLogIsAWitness: the checkpointer's log records, as the JSON
// log holds them, are a witness verify reads (README: "or the service's
// JSON log").
func TestServiceLogIsAWitness(t *testing.T) {
	w := newTamperWorld(t)
	var logged strings.Builder
	cp := audit.Checkpointer{Log: slog.New(slog.NewJSONHandler(&logged, nil)), Signer: w.keys, Interval: interval}
	cp.Once(context.Background(), w.log)
	wit, err := audit.ReadWitness(strings.NewReader(logged.String()))
	if err != nil || len(wit) != 1 || wit[0].Seq != 3 || wit[0].Events != 2 {
		t.Fatalf("witness from the log = %+v, %v; want checkpoint 3 over the 2 tail events\n%s", wit, err, logged.String())
	}
	if r := w.verify(t, audit.VerifyOptions{Witness: wit}); !r.OK || r.Witnessed != 1 {
		t.Errorf("verify with the log as witness = %+v", r)
	}
}
