package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/store/storetest"
)

// TestContract runs the store's contract on every backend, each opened
// through store.Open as serve opens it.
func TestContract(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		m, _ := redistest.Embedded(t)
		var mu sync.Mutex
		now := time.Now()
		m.SetTime(now)
		storetest.Run(t, storetest.Backend{
			URL: "redis://" + m.Addr(),
			Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
			Wait: func(d time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				now = now.Add(d)
				m.SetTime(now)
				m.FastForward(d)
			},
		})
	})
	t.Run("redis-server", func(t *testing.T) {
		t.Parallel()
		srv := redistest.StartServer(t)
		storetest.Run(t, storetest.Backend{URL: srv.URL(), Now: time.Now, Wait: time.Sleep})
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		c := redistest.StartCluster(t)
		storetest.Run(t, storetest.Backend{URL: c.URL(), Now: time.Now, Wait: time.Sleep})
	})
	t.Run("sentinel", func(t *testing.T) {
		t.Parallel()
		s := redistest.StartSentinel(t, 1)
		// Every change waits for the replica, as in production.
		storetest.Run(t, storetest.Backend{URL: s.URL(), Now: time.Now, Wait: time.Sleep, ReplicaAck: time.Second})
	})
}

// TestReplicaAck: behind Sentinel every change waits for a replica; with the
// replica gone, a change is refused as not replicated (the caller answers
// 503) instead of answering 200 for state one node holds.
func TestReplicaAck(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartSentinel(t, 1)
	b := storetest.Backend{URL: s.URL(), Now: time.Now, Wait: time.Sleep, ReplicaAck: 200 * time.Millisecond}
	st := b.Open(t)
	if got := st.Replication(ctx); got != "wait" {
		t.Fatalf("Replication behind Sentinel = %q, want wait", got)
	}
	ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Denied, Actor: audit.Actor{ID: "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, ev); err != nil {
		t.Fatalf("append with a live replica: %v", err)
	}
	s.Nodes[1].Stop()
	start := time.Now()
	if _, err := st.Append(ctx, ev); !errors.Is(err, store.ErrNotReplicated) {
		t.Fatalf("append with the replica down = %v, want ErrNotReplicated", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("the refusal took %s, want about the 200ms acknowledgement timeout", d)
	}
	standalone := storetest.Backend{URL: redistest.StartServer(t).URL(), Now: time.Now, ReplicaAck: 200 * time.Millisecond}.Open(t)
	if got := standalone.Replication(ctx); got != "none" {
		t.Errorf("Replication of a standalone server = %q, want none (no wait)", got)
	}
}

// TestReplicaAckFailsClosedWithoutInfo: a primary whose INFO the service
// may not read (an ACL) is waited on as if it had a replica: a standalone
// server then refuses the change as not replicated, rather than the
// service answering 200 with no replica having it.
func TestReplicaAckFailsClosedWithoutInfo(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartServer(t)
	if err := srv.Client(t).Do(ctx, "ACL", "SETUSER", "noinfo", "on", ">noinfo-password-0123456789", "~*", "&*", "+@all", "-info").Err(); err != nil {
		t.Fatal(err)
	}
	url := "redis://noinfo:noinfo-password-0123456789@" + srv.Addr
	st := storetest.Backend{URL: url, Now: time.Now, ReplicaAck: 100 * time.Millisecond}.Open(t)
	ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Denied, Actor: audit.Actor{ID: "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, ev); !errors.Is(err, store.ErrNotReplicated) {
		t.Errorf("append with INFO refused and no replica = %v, want ErrNotReplicated (fail closed)", err)
	}
	if got := st.Replication(ctx); got != "wait" {
		t.Errorf("Replication with INFO refused = %q, want wait", got)
	}
}
