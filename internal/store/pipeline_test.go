package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/store/storetest"
	"github.com/impersonator/impersonator/internal/token"
)

// TestConcurrentScriptsShareRoundTrips: the scripts that wait for no
// replica go through the client's autopipeliner, so concurrent mints reach
// Redis in far fewer round trips than there are mints (one each before),
// and each mint still gets its own answer and its own stored token id.
func TestConcurrentScriptsShareRoundTrips(t *testing.T) {
	srv := redistest.StartServer(t)
	c := redistest.CountTrips(t, srv.Addr)
	st := storetest.Backend{URL: c.URL(), Now: time.Now}.Open(t)
	ctx := context.Background()
	minted, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Minted, Actor: audit.Actor{ID: "1001"}, Subject: audit.Subject{Collection: "users", ID: "42"}})
	if err != nil {
		t.Fatal(err)
	}
	g := store.Grant{Actor: audit.Actor{ID: "1001"}, Subject: audit.Subject{Collection: "users", ID: "42"}, Reason: "ticket 1234"}
	reserve := func(jti string) (string, error) {
		return st.Reserve(ctx, store.Reservation{JTI: jti, Grant: g, TTL: time.Minute, Minted: minted})
	}
	if _, err := reserve(token.NewJTI()); err != nil { // loads the script
		t.Fatal(err)
	}
	if n := c.Trips(func() { _, err = reserve(token.NewJTI()) }); n != 1 || err != nil {
		t.Fatalf("a lone mint: %d round trips, %v; want 1", n, err)
	}

	const n = 64
	jtis, ids, errs := make([]string, n), make([]string, n), make([]error, n)
	for i := range jtis {
		jtis[i] = token.NewJTI()
	}
	trips := c.Trips(func() {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				ids[i], errs[i] = reserve(jtis[i])
			})
		}
		close(start)
		wg.Wait()
	})
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil || ids[i] == "" || seen[ids[i]] {
			t.Fatalf("mint %d: event id %q, %v (each wants its own)", i, ids[i], errs[i])
		}
		seen[ids[i]] = true
		if _, state, err := st.Lookup(ctx, jtis[i]); state != store.Live || err != nil {
			t.Fatalf("token id %d after its mint: %s, %v", i, state, err)
		}
	}
	t.Logf("%d concurrent mints: %d round trips", n, trips)
	if trips > n/2 {
		t.Errorf("%d concurrent mints took %d round trips; want at most %d (batched)", n, trips, n/2)
	}

	// The session check's last-seen write (Touch, the hot path when a
	// session is not served from memory) goes the same way.
	redeemed, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Redeemed, Actor: g.Actor, Subject: g.Subject})
	if err != nil {
		t.Fatal(err)
	}
	sess := store.Session{ID: token.NewJTI(), Actor: g.Actor, Subject: g.Subject, ExpiresAt: time.Now().Add(time.Hour)}
	if ok, _, err := st.Redeem(ctx, store.Redemption{JTI: jtis[0], Session: sess, Idle: time.Hour, Redeemed: redeemed, Unknown: minted}); !ok || err != nil {
		t.Fatalf("redeem: %v, %v", ok, err)
	}
	touched := make([]error, n)
	trips = c.Trips(func() {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				var got store.Session
				got, _, touched[i] = st.Touch(ctx, sess.ID)
				if touched[i] == nil && got.ID != sess.ID {
					touched[i] = fmt.Errorf("touched session %q", got.ID)
				}
			})
		}
		close(start)
		wg.Wait()
	})
	for i, err := range touched {
		if err != nil {
			t.Fatalf("touch %d: %v", i, err)
		}
	}
	t.Logf("%d concurrent session checks: %d round trips", n, trips)
	if trips > n/2 {
		t.Errorf("%d concurrent session checks took %d round trips; want at most %d (batched)", n, trips, n/2)
	}
}

// TestNoScriptSentTwice: when the connection breaks after Redis ran a
// script and before its answer arrived, the script is not sent again (a
// second audit event, a second session): the caller gets the error, and
// Redis holds the work of one run.
func TestNoScriptSentTwice(t *testing.T) {
	srv := redistest.StartServer(t)
	st := storetest.Backend{URL: redistest.DropFirstAnswer(t, srv.Addr), Now: time.Now}.Open(t)
	ctx := context.Background()
	ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Rejected, Actor: audit.Actor{ID: "1001"}, Subject: audit.Subject{Collection: "users", ID: "42"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, ev); err == nil {
		t.Fatal("the append whose answer was lost reported success")
	}
	recs, err := st.Events(ctx, "-", "+", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Errorf("the audit stream holds %d events after one append whose answer was lost, want 1 (sent once)", len(recs))
	}
	if _, err := st.Append(ctx, ev); err != nil { // the next request goes through
		t.Fatalf("the next append: %v", err)
	}
}
