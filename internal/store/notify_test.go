package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

func appendN(t *testing.T, st *store.Store, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Minted, Actor: audit.Actor{ID: fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		id, err := st.Append(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestNotifyGroup is the notifier's side of the store, on a real
// redis-server and on the embedded one (development): the group starts at
// the stream's end, entries go to one consumer, a live consumer keeps its
// entries from being claimed, a dead one's are claimed, every URL must be
// final before the entry is acknowledged, a dead letter is written once,
// and the lag is the oldest unfinished event's age.
func TestNotifyGroup(t *testing.T) {
	for _, name := range []string{"redis-server", "embedded"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var url string
			if name == "embedded" {
				_, url = redistest.EmbeddedURL(t)
			} else {
				url = redistest.StartServer(t).URL()
			}
			st, err := store.Open(url, store.Options{Prefix: redistest.Prefix()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			testNotifyGroup(t, st, name == "embedded")
		})
	}
}

func testNotifyGroup(t *testing.T, st *store.Store, embedded bool) {
	ctx := context.Background()
	appendN(t, st, 2) // before the group: never notified
	if err := st.NotifyGroup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.NotifyGroup(ctx); err != nil {
		t.Fatalf("second NotifyGroup: %v", err)
	}
	ids := appendN(t, st, 3)
	got, err := st.NotifyRead(ctx, "a", 2, 10*time.Millisecond)
	if err != nil || len(got) != 2 || got[0].ID != ids[0] || got[1].ID != ids[1] || got[0].Raw == "" {
		t.Fatalf("NotifyRead a = %v, %v; want the first two events after the group", got, err)
	}
	got, err = st.NotifyRead(ctx, "b", 10, 10*time.Millisecond)
	if err != nil || len(got) != 1 || got[0].ID != ids[2] {
		t.Fatalf("NotifyRead b = %v, %v; want the third only", got, err)
	}
	if got, err := st.NotifyRead(ctx, "b", 10, 10*time.Millisecond); err != nil || len(got) != 0 {
		t.Fatalf("NotifyRead with nothing new = %v, %v", got, err)
	}
	if lag, err := st.NotifyLag(ctx, time.Now().Add(time.Minute)); err != nil || lag < 59*time.Second || lag > 2*time.Minute {
		t.Errorf("NotifyLag a minute on = %s, %v; want about a minute", lag, err)
	}

	// a keeps its entries fresh; b's idle one is claimed by a.
	time.Sleep(60 * time.Millisecond)
	if lost, err := st.NotifyKeep(ctx, "a", ids[:2]); err != nil || len(lost) != 0 {
		t.Fatalf("NotifyKeep = %v, %v; want nothing lost", lost, err)
	}
	claimed, next, err := st.NotifyClaim(ctx, "a", 50*time.Millisecond, "0-0", 10)
	if err != nil || len(claimed) != 1 || claimed[0].ID != ids[2] || claimed[0].Raw == "" {
		t.Fatalf("NotifyClaim = %v, %q, %v; want b's entry only", claimed, next, err)
	}
	if lost, err := st.NotifyKeep(ctx, "b", ids[2:]); err != nil || len(lost) != 1 {
		t.Fatalf("NotifyKeep by the consumer that lost it = %v, %v; want it lost", lost, err)
	}
	// A released entry is claimed at once; another consumer's release of
	// it changes nothing.
	if err := st.NotifyRelease(ctx, "a", ids[2:], time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := st.NotifyRelease(ctx, "b", ids[2:], time.Hour); err != nil {
		t.Fatal(err)
	}
	if claimed, _, err := st.NotifyClaim(ctx, "b", time.Minute, "0-0", 10); err != nil || len(claimed) != 1 || claimed[0].ID != ids[2] {
		t.Fatalf("NotifyClaim after the release = %v, %v; want the released entry only", claimed, err)
	}
	if claimed, _, err := st.NotifyClaim(ctx, "a", 0, "0-0", 10); err != nil || len(claimed) != 3 {
		t.Fatalf("NotifyClaim of everything = %v, %v", claimed, err)
	}

	// Retry state survives in Redis; the entry is acknowledged once every
	// URL is final.
	targets := []string{"u1", "u2"}
	due := time.UnixMilli(time.Now().Add(time.Minute).UnixMilli())
	if err := st.NotifyRetry(ctx, ids[0], "u1", store.NotifyState{Attempts: 2, NextAt: due}, time.Hour); err != nil {
		t.Fatal(err)
	}
	states, err := st.NotifyStates(ctx, ids[0])
	if err != nil || states["u1"].Attempts != 2 || !states["u1"].NextAt.Equal(due) || states["u1"].Done {
		t.Fatalf("NotifyStates = %+v, %v", states, err)
	}
	if acked, err := st.NotifyDone(ctx, ids[0], "u2", targets, nil, time.Hour); err != nil || acked {
		t.Fatalf("NotifyDone u2 = %v, %v; want not yet acknowledged", acked, err)
	}
	dead := &store.DeadLetter{EventID: "evt_x", URL: "https://example.com/…", Error: "HTTP 503", Attempts: 8}
	for range 2 {
		if acked, err := st.NotifyDone(ctx, ids[0], "u1", targets, dead, time.Hour); err != nil || !acked {
			t.Fatalf("NotifyDone u1 dead = %v, %v; want acknowledged", acked, err)
		}
	}
	dls, err := st.DeadLetters(ctx, 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("DeadLetters = %+v, %v; want one", dls, err)
	}
	if d := dls[0]; d.EventID != "evt_x" || d.StreamID != ids[0] || d.Target != "u1" || d.Error != "HTTP 503" || d.Attempts != 8 || d.URL != dead.URL {
		t.Errorf("dead letter = %+v", d)
	}
	if states, err := st.NotifyStates(ctx, ids[0]); err != nil || len(states) != 0 {
		t.Errorf("state after the acknowledgement = %v, %v; want deleted", states, err)
	}
	if err := st.NotifyAck(ctx, ids[1], ids[2]); err != nil {
		t.Fatal(err)
	}
	pending, err := st.NotifyPending(ctx)
	if err != nil || len(pending) != 0 {
		t.Fatalf("NotifyPending after every ack = %v, %v", pending, err)
	}
	if lag, err := st.NotifyLag(ctx, time.Now()); err != nil || lag != 0 {
		t.Errorf("NotifyLag with nothing owed = %s, %v; want 0", lag, err)
	}
	appendN(t, st, 1)
	if lag, err := st.NotifyLag(ctx, time.Now().Add(time.Minute)); err != nil || lag < 59*time.Second {
		t.Errorf("NotifyLag of an unread event = %s, %v; want about a minute", lag, err)
	}

	// A consumer that holds nothing leaves; one that holds entries stays.
	got, err = st.NotifyRead(ctx, "c", 10, 10*time.Millisecond)
	if err != nil || len(got) != 1 {
		t.Fatalf("NotifyRead c = %v, %v", got, err)
	}
	for _, c := range []string{"a", "b", "c"} {
		if err := st.NotifyLeave(ctx, c); err != nil {
			t.Fatalf("NotifyLeave %s: %v", c, err)
		}
	}
	if pending, err := st.NotifyPending(ctx); err != nil || pending["c"] != 1 {
		t.Fatalf("pending after leaving = %v, %v; want c's entry kept", pending, err)
	}
	if !embedded { // miniredis keeps no consumer idle times
		if n, err := st.NotifyPrune(ctx, 0, "z"); err != nil || n != 0 {
			t.Errorf("NotifyPrune = %d, %v; want nothing (a and b left, c holds an entry)", n, err)
		}
	}
}
