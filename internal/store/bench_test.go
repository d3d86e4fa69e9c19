package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/store/storetest"
	"github.com/impersonator/impersonator/internal/token"
)

// The store benchmarks run on real servers, where round trips cost what
// they cost in production (minus the network).

func reserveRedeem(b *testing.B, st *store.Store) {
	ctx := context.Background()
	enc := func(typ audit.Type) audit.Encoded {
		e, err := audit.Encoder{}.Encode(audit.Event{Type: typ, Actor: audit.Actor{ID: "1001", Email: "ada@example.com"}, Subject: audit.Subject{Collection: "users", ID: "42"}})
		if err != nil {
			b.Fatal(err)
		}
		return e
	}
	minted, redeemed, rejected := enc(audit.Minted), enc(audit.Redeemed), enc(audit.Rejected)
	g := store.Grant{Actor: audit.Actor{ID: "1001"}, Subject: audit.Subject{Collection: "users", ID: "42"}, Reason: "ticket 1234"}
	b.ReportAllocs()
	for b.Loop() {
		jti := token.NewJTI()
		if _, err := st.Reserve(ctx, store.Reservation{JTI: jti, Grant: g, TTL: time.Minute, Minted: minted}); err != nil {
			b.Fatal(err)
		}
		sess := store.Session{ID: token.NewJTI(), Actor: g.Actor, Subject: g.Subject, ExpiresAt: time.Now().Add(time.Hour)}
		ok, _, err := st.Redeem(ctx, store.Redemption{JTI: jti, Session: sess, Idle: time.Minute, Redeemed: redeemed, Unknown: rejected, Consumed: rejected})
		if !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkReserveRedeem reserves a token id with its minted event, then
// redeems it into a session with its redeemed event: two atomic scripts.
func BenchmarkReserveRedeem(b *testing.B) {
	srv := redistest.StartServer(b)
	reserveRedeem(b, storetest.Backend{URL: srv.URL(), Now: time.Now}.Open(b))
}

// BenchmarkReserveRedeemReplicaAck is the same behind Sentinel, each
// change waiting for its replica's acknowledgement: the cost of "a 200
// means two nodes hold it".
func BenchmarkReserveRedeemReplicaAck(b *testing.B) {
	s := redistest.StartSentinel(b, 1)
	reserveRedeem(b, storetest.Backend{URL: s.URL(), Now: time.Now, ReplicaAck: time.Second}.Open(b))
}

// BenchmarkFloorReserveRedeem is the floor: two bare round trips (PING) to
// the same server.
func BenchmarkFloorReserveRedeem(b *testing.B) {
	srv := redistest.StartServer(b)
	c := srv.Client(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		for range 2 {
			if err := c.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
