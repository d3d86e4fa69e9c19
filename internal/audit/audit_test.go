package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
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
	rdb  redis.UniversalClient
}

func backends(t *testing.T) []backend {
	_, emb := redistest.Embedded(t)
	return []backend{{"embedded", emb}, {"redis-server", redistest.StartServer(t).Client(t)}}
}

func newLog(rdb redis.UniversalClient, now func() time.Time) (*store.Store, *audit.Log) {
	st := store.New(rdb, store.Options{Prefix: redistest.Prefix(), Now: now})
	return st, audit.NewLog(rdb, st.AuditStream(), st.Key("audit", "checkpoints"), now)
}

var (
	ada   = audit.Actor{ID: "1001", Email: "ada@example.com", Team: "Support"}
	grace = audit.Actor{ID: "2002", Email: "grace@example.com"}
)

func ev(typ audit.Type, actor audit.Actor, collection, id string, at time.Time) audit.Event {
	return audit.Event{Type: typ, Actor: actor, Subject: audit.Subject{Collection: collection, ID: id}, Time: at}
}

func TestQueryFilters(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st, log := newLog(b.rdb, func() time.Time { return t0 })
			requested := ev(audit.Minted, ada, "users", "7", t0.Add(4*time.Minute))
			requested.Requester = &audit.Actor{ID: "3003"}
			all := []audit.Event{
				ev(audit.Minted, ada, "users", "42", t0),
				ev(audit.Redeemed, ada, "users", "42", t0.Add(time.Minute)),
				ev(audit.Denied, grace, "users", "1", t0.Add(2*time.Minute)),
				ev(audit.Minted, grace, "companies", "42", t0.Add(3*time.Minute)),
				requested,
			}
			for i := range all {
				all[i].ID = fmt.Sprintf("e%d", i)
				if _, err := st.Append(ctx, all[i]); err != nil {
					t.Fatal(err)
				}
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
				{"since (inclusive)", audit.Filter{Since: t0.Add(3 * time.Minute)}, []string{"e4", "e3"}},
				{"until (exclusive)", audit.Filter{Until: t0.Add(time.Minute)}, []string{"e0"}},
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

// TestPaginationUnderConcurrentAppends: paging through the log while other
// events are appended returns every older event exactly once, in order.
func TestPaginationUnderConcurrentAppends(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st, log := newLog(b.rdb, time.Now)
			const n = 60
			for i := range n {
				e := ev(audit.Minted, ada, "users", "42", time.Time{})
				e.ID = fmt.Sprintf("old-%02d", i)
				if _, err := st.Append(ctx, e); err != nil {
					t.Fatal(err)
				}
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
					e := ev(audit.Redeemed, grace, "users", "7", time.Time{})
					e.ID = fmt.Sprintf("new-%d", i)
					if _, err := st.Append(ctx, e); err != nil {
						t.Error(err)
						return
					}
				}
			})
			var seen []string
			cursor := ""
			for pages := 0; ; pages++ {
				p, err := log.Query(ctx, audit.Filter{Actor: "1001"}, 7, cursor)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range p.Events {
					seen = append(seen, e.ID)
				}
				if p.NextCursor == nil {
					break
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
// checkpointed in two rounds, with two events after the last checkpoint.
type tamperWorld struct {
	rdb    *redis.Client
	log    *audit.Log
	keys   *token.Keyset
	stream string
	cps    string
	ids    []string
}

func newTamperWorld(t *testing.T) *tamperWorld {
	t.Helper()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	st := store.New(rdb, store.Options{Prefix: redistest.Prefix()})
	w := &tamperWorld{rdb: rdb, stream: st.AuditStream(), cps: st.Key("audit", "checkpoints")}
	now := t0
	w.log = audit.NewLog(rdb, w.stream, w.cps, func() time.Time { return now })
	w.keys = tokentest.Keyset(t, "")
	ctx := context.Background()
	add := func(i int) {
		e := ev(audit.Minted, ada, "users", fmt.Sprint(i), t0.Add(time.Duration(i)*time.Second))
		e.ID, e.Reason = fmt.Sprintf("evt-%d", i), "ticket 1234"
		js, _ := json.Marshal(e)
		id := fmt.Sprintf("%d-0", 1000*(i+1))
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: w.stream, ID: id, Values: []string{"e", string(js)}}).Err(); err != nil {
			t.Fatal(err)
		}
		w.ids = append(w.ids, id)
	}
	for round, upto := range []int{4, 8} {
		for i := len(w.ids); i < upto; i++ {
			add(i)
		}
		if n, err := w.log.CatchUp(ctx, w.keys); err != nil || n != 1 {
			t.Fatalf("checkpoint round %d: %d, %v", round, n, err)
		}
	}
	add(8)
	add(9)
	return w
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

func TestTamperEvidence(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tamper   func(t *testing.T, w *tamperWorld)
		firstBad string // stream id; empty: intact
		problem  string
	}{
		{"untouched", func(*testing.T, *tamperWorld) {}, "", ""},
		{"modify a field", func(t *testing.T, w *tamperWorld) {
			es := w.entries(t)
			es[5].e = strings.Replace(es[5].e, "ticket 1234", "ticket 9999", 1)
			w.rewrite(t, es)
		}, "6000-0", "modified"},
		{"delete an event", func(t *testing.T, w *tamperWorld) {
			if err := w.rdb.XDel(context.Background(), w.stream, "3000-0").Err(); err != nil {
				t.Fatal(err)
			}
		}, "3000-0", "deleted"},
		{"reorder two events", func(t *testing.T, w *tamperWorld) {
			es := w.entries(t)
			es[1].e, es[2].e = es[2].e, es[1].e
			w.rewrite(t, es)
		}, "2000-0", "modified"},
		{"insert a forged event", func(t *testing.T, w *tamperWorld) {
			es := w.entries(t)
			forged := rawEntry{"6500-0", strings.Replace(es[5].e, "evt-5", "evt-forged", 1)}
			w.rewrite(t, append(es[:6], append([]rawEntry{forged}, es[6:]...)...))
		}, "6500-0", "inserted"},
		{"delete the first checkpoint", func(t *testing.T, w *tamperWorld) {
			w.deleteCheckpoint(t, 0)
		}, "1000-0", "checkpoints before seq 2 are missing"},
		{"delete a middle checkpoint", func(t *testing.T, w *tamperWorld) {
			// Cover the two tail events with a third checkpoint, then delete the second.
			if _, err := w.log.CatchUp(context.Background(), w.keys); err != nil {
				t.Fatal(err)
			}
			w.deleteCheckpoint(t, 1)
		}, "5000-0", "checkpoint chain broken between seq 1 and seq 3"},
		{"alter a checkpoint to match a modified event", func(t *testing.T, w *tamperWorld) {
			es := w.entries(t)
			es[2].e = strings.Replace(es[2].e, "ticket 1234", "ticket 0000", 1)
			w.rewrite(t, es)
			w.editCheckpoint(t, 0, func(c *audit.Checkpoint) {
				c.Leaves[2].Hash = "recomputed-by-the-attacker"
			})
		}, "1000-0", "invalid signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newTamperWorld(t)
			tc.tamper(t, w)
			r, err := w.log.Verify(context.Background(), w.keys)
			if err != nil {
				t.Fatal(err)
			}
			if tc.firstBad == "" {
				if !r.OK || r.Verified != 8 || r.Uncovered != 2 || r.Checkpoints != 2 {
					t.Errorf("report = %+v, want ok with 8 verified, 2 uncovered, 2 checkpoints", r)
				}
				return
			}
			if r.OK || r.FirstBad != tc.firstBad || !strings.Contains(r.Problem, tc.problem) {
				t.Errorf("report = %+v, want first bad event %s and a problem mentioning %q", r, tc.firstBad, tc.problem)
			}
		})
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
// ranges and the log still verifies from the anchor.
func TestRetentionKeepsVerification(t *testing.T) {
	w := newTamperWorld(t)
	ctx := context.Background()
	// Checkpoints were written at t0; trim with a clock two hours later and
	// a one-hour retention: everything checkpointed goes but the anchor.
	later := audit.NewLog(w.rdb, w.stream, w.cps, func() time.Time { return t0.Add(2 * time.Hour) })
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
	r, err := later.Verify(ctx, w.keys)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || r.FromSeq != 2 || r.Uncovered != 2 {
		t.Errorf("report after trimming = %+v, want ok from seq 2 with 2 uncovered", r)
	}
	if _, err := later.CatchUp(ctx, w.keys); err != nil {
		t.Fatal(err)
	}
	r, _ = later.Verify(ctx, w.keys)
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
			if _, err := w.log.CatchUp(ctx, w.keys); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	r, err := w.log.Verify(ctx, w.keys)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || r.Checkpoints != 3 || r.Uncovered != 0 || r.Verified != 10 {
		t.Errorf("report = %+v, want one chain of 3 checkpoints covering all 10 events", r)
	}
}
