package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// The store benchmarks run on a real redis-server, where round trips cost
// what they cost in production (minus the network).

// BenchmarkReserveConsume reserves a token id with its minted event, then
// consumes it with its redeemed event: two atomic scripts.
func BenchmarkReserveConsume(b *testing.B) {
	srv := redistest.StartServer(b)
	s := store.New(srv.Client(b), store.Options{Prefix: redistest.Prefix()})
	ctx := context.Background()
	rej := func(store.State) audit.Event { return event(audit.Rejected, "", "") }
	b.ReportAllocs()
	for b.Loop() {
		jti := token.NewJTI()
		if _, err := s.Reserve(ctx, jti, grant, time.Minute, event(audit.Minted, "", "")); err != nil {
			b.Fatal(err)
		}
		if ok, _, err := s.Consume(ctx, jti, event(audit.Redeemed, "", ""), rej); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkFloorReserveConsume is the floor: two bare round trips (PING) to
// the same server.
func BenchmarkFloorReserveConsume(b *testing.B) {
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
