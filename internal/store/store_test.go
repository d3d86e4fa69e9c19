package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

// backend is one Redis the conformance suite runs against.
type backend struct {
	name string
	// client returns a new client of the backend.
	client func(t *testing.T) redis.UniversalClient
	// expire makes d pass for the server's TTLs, or reports false when the
	// backend cannot move its clock.
	expire func(d time.Duration) bool
}

func backends(t *testing.T) []backend {
	m, _ := redistest.Embedded(t)
	real := redistest.StartServer(t)
	return []backend{
		{
			name: "embedded",
			client: func(t *testing.T) redis.UniversalClient {
				c := redis.NewClient(&redis.Options{Addr: m.Addr()})
				t.Cleanup(func() { c.Close() })
				return c
			},
			expire: func(d time.Duration) bool { m.FastForward(d); return true },
		},
		{
			name:   "redis-server",
			client: func(t *testing.T) redis.UniversalClient { return real.Client(t) },
			expire: func(time.Duration) bool { return false },
		},
	}
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func newStore(t *testing.T, b backend) *store.Store {
	t.Helper()
	return store.New(b.client(t), store.Options{Prefix: redistest.Prefix(), Now: func() time.Time { return t0 }})
}

var (
	actor   = audit.Actor{ID: "1001", Email: "ada@example.com", Team: "Support", Role: "Admin"}
	subject = audit.Subject{Collection: "users", ID: "42"}
	grant   = store.Grant{Actor: actor, Subject: subject, Reason: "ticket 1234", ExpiresAt: t0.Add(time.Minute)}
)

func event(typ audit.Type, id, detail string) audit.Event {
	return audit.Event{ID: id, Type: typ, Actor: actor, Subject: subject, TokenID: "jti", Detail: detail}
}

func rejected(st store.State) audit.Event {
	return event(audit.Rejected, "rej-"+st.String(), st.String())
}

// events returns the audit stream's events, without their stream ids.
func events(t *testing.T, s *store.Store) []audit.Event {
	t.Helper()
	entries, err := s.Range(context.Background(), "-", "+", 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, e := range entries {
		out = append(out, e.Event)
	}
	return out
}

func stamped(evs ...audit.Event) []audit.Event {
	for i := range evs {
		evs[i].Stamp(t0)
	}
	return evs
}

func TestConformance(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Run("ReserveThenConsumeOnce", func(t *testing.T) { testReserveConsume(t, b) })
			t.Run("ReserveDuplicate", func(t *testing.T) { testReserveDuplicate(t, b) })
			t.Run("ConsumeUnknown", func(t *testing.T) { testConsumeUnknown(t, b) })
			t.Run("TTL", func(t *testing.T) { testTTL(t, b) })
			t.Run("Append", func(t *testing.T) { testAppend(t, b) })
			t.Run("KeysShareOneHashTag", func(t *testing.T) { testHashTag(t, b) })
		})
	}
}

func testReserveConsume(t *testing.T, b backend) {
	ctx := context.Background()
	s := newStore(t, b)
	minted := event(audit.Minted, "m1", "")
	if _, err := s.Reserve(ctx, "jti", grant, time.Minute, minted); err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	g, st, err := s.Lookup(ctx, "jti")
	if err != nil || st != store.Live {
		t.Fatalf("Lookup = %v, %v; want live", st, err)
	}
	if diff := cmp.Diff(grant, g); diff != "" {
		t.Errorf("grant (-want +got):\n%s", diff)
	}
	ok, st, err := s.Consume(ctx, "jti", event(audit.Redeemed, "r1", ""), rejected)
	if err != nil || !ok || st != store.Live {
		t.Fatalf("first Consume = %v, %v, %v; want true, live, nil", ok, st, err)
	}
	ok, st, err = s.Consume(ctx, "jti", event(audit.Redeemed, "r2", ""), rejected)
	if err != nil || ok || st != store.Consumed {
		t.Fatalf("second Consume = %v, %v, %v; want false, consumed, nil", ok, st, err)
	}
	if _, st, _ := s.Lookup(ctx, "jti"); st != store.Consumed {
		t.Errorf("Lookup after consume = %v, want consumed", st)
	}
	want := stamped(minted, event(audit.Redeemed, "r1", ""), rejected(store.Consumed))
	if diff := cmp.Diff(want, events(t, s)); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
}

func testReserveDuplicate(t *testing.T, b backend) {
	ctx := context.Background()
	s := newStore(t, b)
	if _, err := s.Reserve(ctx, "jti", grant, time.Minute, event(audit.Minted, "m1", "")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Reserve(ctx, "jti", grant, time.Minute, event(audit.Minted, "m2", ""))
	if !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("second Reserve = %v, want ErrDuplicate", err)
	}
	if got := len(events(t, s)); got != 1 {
		t.Errorf("got %d audit events after a refused duplicate, want 1", got)
	}
}

func testConsumeUnknown(t *testing.T, b backend) {
	s := newStore(t, b)
	ok, st, err := s.Consume(context.Background(), "never-minted", event(audit.Redeemed, "r1", ""), rejected)
	if err != nil || ok || st != store.Unknown {
		t.Fatalf("Consume = %v, %v, %v; want false, unknown, nil", ok, st, err)
	}
	if diff := cmp.Diff(stamped(rejected(store.Unknown)), events(t, s)); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
}

func testTTL(t *testing.T, b backend) {
	ctx := context.Background()
	s := newStore(t, b)
	if _, err := s.Reserve(ctx, "jti", grant, 60*time.Second, event(audit.Minted, "m1", "")); err != nil {
		t.Fatal(err)
	}
	key := s.Key("jti", "jti")
	pttl, err := s.Client().PTTL(ctx, key).Result()
	if err != nil || pttl <= 50*time.Second || pttl > 60*time.Second {
		t.Fatalf("PTTL after reserve = %v, %v; want (50s, 60s]", pttl, err)
	}
	if ok, _, err := s.Consume(ctx, "jti", event(audit.Redeemed, "r1", ""), rejected); !ok || err != nil {
		t.Fatalf("Consume = %v, %v", ok, err)
	}
	// The consumed mark keeps the token's expiry: no key lives forever.
	pttl, err = s.Client().PTTL(ctx, key).Result()
	if err != nil || pttl <= 0 || pttl > 60*time.Second {
		t.Fatalf("PTTL after consume = %v, %v; want (0, 60s]", pttl, err)
	}
	if !b.expire(61 * time.Second) {
		return // a real server's clock cannot be moved; the PTTL checks above hold for it
	}
	if _, st, _ := s.Lookup(ctx, "jti"); st != store.Unknown {
		t.Errorf("Lookup after expiry = %v, want unknown", st)
	}
}

func testAppend(t *testing.T, b backend) {
	s := newStore(t, b)
	denied := event(audit.Denied, "d1", "rule: blocked subject")
	if _, err := s.Append(context.Background(), denied); err != nil {
		t.Fatal(err)
	}
	bad := event("impersonation.bogus", "b1", "")
	if _, err := s.Append(context.Background(), bad); err == nil {
		t.Error("Append accepted an event of unknown type")
	}
	if diff := cmp.Diff(stamped(denied), events(t, s)); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
}

func testHashTag(t *testing.T, b backend) {
	s := newStore(t, b)
	for _, k := range []string{s.Key("jti", "x"), s.Key("session", "y")} {
		if got, want := redisSlot(k), redisSlot(s.AuditStream()); got != want {
			t.Errorf("key %q in slot %d, audit stream in %d", k, got, want)
		}
	}
	if redisSlot("{user1000}.following") != redisSlot("{user1000}.followers") || redisSlot("123456789") != 12739 {
		t.Fatal("redisSlot disagrees with the Redis Cluster specification")
	}
}

// redisSlot is the Cluster slot of key: CRC16-CCITT (XMODEM) of its hash
// tag, mod 16384, as the Redis Cluster specification defines it.
func redisSlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}

// TestConsumeExactlyOnceAcrossInstances: 500 goroutines, split over two
// stores (two instances of the service) on one real Redis, consume the same
// token id; exactly one wins and every attempt is audited.
func TestConsumeExactlyOnceAcrossInstances(t *testing.T) {
	srv := redistest.StartServer(t)
	prefix := redistest.Prefix()
	a := store.New(srv.Client(t), store.Options{Prefix: prefix})
	b := store.New(srv.Client(t), store.Options{Prefix: prefix})
	ctx := context.Background()
	if _, err := a.Reserve(ctx, "race", grant, time.Minute, event(audit.Minted, "", "")); err != nil {
		t.Fatal(err)
	}
	const n = 500
	var wins, losses atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			<-start
			ok, _, err := s.Consume(ctx, "race", event(audit.Redeemed, "", ""), func(st store.State) audit.Event {
				return event(audit.Rejected, "", st.String())
			})
			switch {
			case err != nil:
				t.Error(err)
			case ok:
				wins.Add(1)
			default:
				losses.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if wins.Load() != 1 || losses.Load() != n-1 {
		t.Fatalf("got %d successful and %d refused consumptions, want 1 and %d", wins.Load(), losses.Load(), n-1)
	}
	counts := map[audit.Type]int{}
	for _, e := range events(t, a) {
		counts[e.Type]++
	}
	want := map[audit.Type]int{audit.Minted: 1, audit.Redeemed: 1, audit.Rejected: n - 1}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("audit event counts (-want +got):\n%s", diff)
	}
}

// TestFailsClosedWhenRedisIsDown: with Redis gone, nothing is reserved or
// consumed and every call reports an error; when it is back, calls succeed
// with the same client.
func TestFailsClosedWhenRedisIsDown(t *testing.T) {
	srv := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	s := store.New(c, store.Options{Prefix: redistest.Prefix()})
	ctx := context.Background()
	srv.Stop()
	if _, err := s.Reserve(ctx, "j1", grant, time.Minute, event(audit.Minted, "", "")); err == nil {
		t.Error("Reserve succeeded with Redis down")
	}
	if ok, _, err := s.Consume(ctx, "j1", event(audit.Redeemed, "", ""), rejected); err == nil || ok {
		t.Errorf("Consume = %v, %v with Redis down; want false and an error", ok, err)
	}
	if _, err := s.Append(ctx, event(audit.Denied, "", "")); err == nil {
		t.Error("Append succeeded with Redis down")
	}
	srv.Restart()
	if _, err := s.Reserve(ctx, "j1", grant, time.Minute, event(audit.Minted, "", "")); err != nil {
		t.Errorf("Reserve after Redis came back: %v", err)
	}
}

// TestEmbeddedOpen: Open("") starts a working in-process Redis.
func TestEmbeddedOpen(t *testing.T) {
	conn, err := store.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.Embedded == nil {
		t.Fatal(`Open("") did not start an embedded Redis`)
	}
	if err := store.New(conn.Client, store.Options{}).Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestValidateURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"", true},
		{"redis://localhost:6379/0", true},
		{"rediss://user:pw@redis.internal:6380", true},
		{"unix:///run/redis.sock", true},
		{"redis://s1:26379?master_name=mymaster&addr=s2:26379", true},
		{"redis://n1:6379?addr=n2:6379&addr=n3:6379", true},
		{"http://localhost:6379", false},
		{"redis://localhost:6379?bogus=1", false},
	} {
		if err := store.ValidateURL(tc.url); (err == nil) != tc.ok {
			t.Errorf("ValidateURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestPersistence(t *testing.T) {
	srv := redistest.StartServer(t) // started with --save "" --appendonly no
	c := srv.Client(t)
	p := store.CheckPersistence(context.Background(), c)
	if !p.Known || p.Durable() {
		t.Errorf("CheckPersistence = %+v, want known and not durable", p)
	}
	if err := c.ConfigSet(context.Background(), "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if p := store.CheckPersistence(context.Background(), c); !p.AOF {
		t.Errorf("CheckPersistence after appendonly yes = %+v, want AOF", p)
	}
}

func TestAllow(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := redistest.Prefix()
			s := store.New(b.client(t), store.Options{Prefix: prefix})
			other := store.New(b.client(t), store.Options{Prefix: prefix}) // a second instance: the count is shared
			for i := range 3 {
				st := s
				if i == 1 {
					st = other
				}
				ok, _, err := st.Allow(ctx, 3, time.Hour, "rate", "admin", "1001")
				if err != nil || !ok {
					t.Fatalf("hit %d = %v, %v; want allowed", i+1, ok, err)
				}
			}
			ok, retry, err := s.Allow(ctx, 3, time.Hour, "rate", "admin", "1001")
			if err != nil || ok || retry <= 59*time.Minute || retry > time.Hour {
				t.Fatalf("hit 4 = %v, retry %v, %v; want refused with retry in (59m, 1h]", ok, retry, err)
			}
			if n, err := s.Count(ctx, "rate", "admin", "1001"); n != 4 || err != nil {
				t.Errorf("Count = %d, %v; want 4", n, err)
			}
			if ok, _, _ := s.Allow(ctx, 3, time.Hour, "rate", "admin", "2002"); !ok {
				t.Error("another admin's first hit was refused")
			}
			if b.expire(time.Hour + time.Second) {
				if ok, _, _ := s.Allow(ctx, 3, time.Hour, "rate", "admin", "1001"); !ok {
					t.Error("hit after the window was refused")
				}
			}
		})
	}
}

// TestReserveLimited: the rate is counted in the reserve step; past it the
// denied event is appended instead and nothing is reserved.
func TestReserveLimited(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t, b)
			limit := &store.Limit{N: 2, Window: time.Hour, Key: []string{"rate", "mint", "1001"}, Denied: event(audit.Denied, "d", "rule rate")}
			for i, jti := range []string{"j1", "j2"} {
				if _, err := s.ReserveLimited(ctx, jti, grant, time.Minute, event(audit.Minted, jti, ""), limit); err != nil {
					t.Fatalf("mint %d: %v", i+1, err)
				}
			}
			_, err := s.ReserveLimited(ctx, "j3", grant, time.Minute, event(audit.Minted, "j3", ""), limit)
			var rate *store.RateError
			if !errors.As(err, &rate) || rate.RetryAfter <= 59*time.Minute || rate.RetryAfter > time.Hour {
				t.Fatalf("third mint = %v, want a RateError with about an hour to wait", err)
			}
			if _, st, _ := s.Lookup(ctx, "j3"); st != store.Unknown {
				t.Errorf("refused token id is %v, want unknown (never reserved)", st)
			}
			want := stamped(event(audit.Minted, "j1", ""), event(audit.Minted, "j2", ""), event(audit.Denied, "d", "rule rate"))
			if diff := cmp.Diff(want, events(t, s)); diff != "" {
				t.Errorf("audit events (-want +got):\n%s", diff)
			}
		})
	}
}
