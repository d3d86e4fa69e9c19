// Package storetest is the store's contract: one suite of every method
// production calls, run against each backend (the embedded Redis, a real
// redis-server, a real Cluster, a real Sentinel setup), each built through
// store.Open as serve builds it. Each subtest gets a fresh key prefix.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redisurl"
	"github.com/impersonator/impersonator/internal/store"
)

// Backend opens stores on one Redis.
type Backend struct {
	Name string
	// URL is the REDIS_URL of the backend.
	URL string
	// Wait makes d pass for the server's expiries and for the store's
	// clock: a real wait on a real server; FastForward on miniredis.
	Wait func(d time.Duration)
	// Now is the clock stores use (time.Now on real servers).
	Now func() time.Time
	// ReplicaAck is the stores' wait for a replica (0: none).
	ReplicaAck time.Duration
}

var prefixes atomic.Int64

// Open returns a store on b with a fresh key prefix, closed when the test
// ends.
func (b Backend) Open(t testing.TB) *store.Store {
	return b.Instances(t, 1)[0]
}

// Instances returns n stores, each with its own client, sharing one fresh
// key prefix: n instances of the service on one Redis.
func (b Backend) Instances(t testing.TB, n int) []*store.Store {
	t.Helper()
	return b.instances(t, n, fmt.Sprintf("{st%d-%d}", time.Now().UnixNano()%1e9, prefixes.Add(1)))
}

func (b Backend) instances(t testing.TB, n int, prefix string) []*store.Store {
	t.Helper()
	out := make([]*store.Store, n)
	for i := range out {
		s, err := store.Open(b.URL, store.Options{Prefix: prefix, Now: b.Now, ReplicaAck: b.ReplicaAck})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out[i] = s
	}
	return out
}

var (
	actor   = audit.Actor{ID: "1001", Email: "ada@example.com", Team: "Support", Role: "Admin"}
	subject = audit.Subject{Collection: "users", ID: "42"}
)

// enc encodes an event of typ with detail, fixed id so tests can compare.
func enc(t testing.TB, now func() time.Time, typ audit.Type, id, detail string) audit.Encoded {
	t.Helper()
	e, err := audit.Encoder{Now: now}.Encode(audit.Event{ID: id, Type: typ, Actor: actor, Subject: subject, TokenID: "jti", Detail: detail})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// events returns the ids and details of the audit stream's events, oldest
// first.
func events(t testing.TB, s *store.Store) []string {
	t.Helper()
	l := audit.NewLog(s, time.Now)
	var out []string
	err := l.Range(context.Background(), "-", func(e audit.Entry) bool {
		out = append(out, e.Event.ID)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func reservation(t testing.TB, b Backend, jti string) store.Reservation {
	return store.Reservation{
		JTI:    jti,
		Grant:  store.Grant{Actor: actor, Subject: subject, Reason: "ticket 1234", ExpiresAt: b.Now().Add(time.Minute).UTC().Truncate(time.Millisecond)},
		TTL:    time.Minute,
		Minted: enc(t, b.Now, audit.Minted, "m-"+jti, ""),
	}
}

func sess(b Backend, id string, ttl time.Duration) store.Session {
	start := b.Now().UTC().Truncate(time.Millisecond)
	return store.Session{ID: id, Actor: actor, Subject: subject, Reason: "ticket 1234", TokenID: "jti",
		StartedAt: start, ExpiresAt: start.Add(ttl), IP: "192.0.2.1"}
}

func redemption(t testing.TB, b Backend, jti, sid string, idle, ttl time.Duration) store.Redemption {
	return store.Redemption{
		JTI: jti, Session: sess(b, sid, ttl), Idle: idle,
		Redeemed: enc(t, b.Now, audit.Redeemed, "r-"+sid, ""),
		Unknown:  enc(t, b.Now, audit.Rejected, "u-"+sid, "unknown"),
		Consumed: enc(t, b.Now, audit.Rejected, "c-"+sid, "consumed"),
	}
}

func lapses(t testing.TB, b Backend, sid string) store.LapseEvents {
	return store.LapseEvents{
		Idle:   enc(t, b.Now, audit.Ended, "idle-"+sid, "idle timeout"),
		Cap:    enc(t, b.Now, audit.Ended, "cap-"+sid, "reached its absolute cap"),
		Unused: enc(t, b.Now, audit.Ended, "unused-"+sid, "never used"),
	}
}

// Run runs the contract against b.
func Run(t *testing.T, b Backend) {
	t.Run("ReserveAndItsEventTogether", func(t *testing.T) { testReserve(t, b) })
	t.Run("ReserveRate", func(t *testing.T) { testReserveRate(t, b) })
	t.Run("ReserveApprovalOnce", func(t *testing.T) { testApproval(t, b) })
	t.Run("RedeemOnce", func(t *testing.T) { testRedeemOnce(t, b) })
	t.Run("RedeemRaceHasOneWinner", func(t *testing.T) { testRedeemRace(t, b) })
	t.Run("RedeemGivesTheGrantsContext", func(t *testing.T) { testRedeemContext(t, b) })
	t.Run("RedeemRefusesAGrantThatDisagrees", func(t *testing.T) { testRedeemDisagree(t, b) })
	t.Run("RedeemGrantWithoutContext", func(t *testing.T) { testRedeemLegacy(t, b) })
	t.Run("RedeemAutoDelivery", func(t *testing.T) { testRedeemAuto(t, b) })
	t.Run("TokenExpiresInRedis", func(t *testing.T) { testTokenExpiry(t, b) })
	t.Run("TouchIdleEndsWithEvent", func(t *testing.T) { testIdle(t, b) })
	t.Run("TouchCapEndsWithEvent", func(t *testing.T) { testCap(t, b) })
	t.Run("EndAndRevoke", func(t *testing.T) { testEnd(t, b) })
	t.Run("SweeperFindsUntouched", func(t *testing.T) { testDue(t, b) })
	t.Run("ListSessions", func(t *testing.T) { testList(t, b) })
	t.Run("CountedFailures", func(t *testing.T) { testCounted(t, b) })
	t.Run("FoldedDenials", func(t *testing.T) { testFolded(t, b) })
	t.Run("WindowEndsWithoutItsExpiry", func(t *testing.T) { testLostExpiry(t, b) })
	t.Run("AppendAndIndexes", func(t *testing.T) { testIndexes(t, b) })
	t.Run("CheckpointCompareAndAppend", func(t *testing.T) { testCheckpoint(t, b) })
	t.Run("TrimBothStreamsTogether", func(t *testing.T) { testTrim(t, b) })
	t.Run("SweepLease", func(t *testing.T) { testLease(t, b) })
	t.Run("ConsentAndSubjectIndexes", func(t *testing.T) { testConsent(t, b) })
	t.Run("OneClock", func(t *testing.T) { testOneClock(t, b) })
	t.Run("FoldedFailuresCounted", func(t *testing.T) { testFoldedLimit(t, b) })
	t.Run("RedeemDeferredReplay", func(t *testing.T) { testDeferredReplay(t, b) })
}

func testReserve(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	r := reservation(t, b, "j1")
	if _, err := s.Reserve(ctx, r); err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	g, st, err := s.Lookup(ctx, "j1")
	if err != nil || st != store.Live {
		t.Fatalf("Lookup = %v, %v; want live", st, err)
	}
	if diff := cmp.Diff(r.Grant, g); diff != "" {
		t.Errorf("grant (-want +got):\n%s", diff)
	}
	if _, err := s.Reserve(ctx, r); !errors.Is(err, store.ErrDuplicate) {
		t.Errorf("second Reserve = %v, want ErrDuplicate", err)
	}
	if got, want := events(t, s), []string{"m-j1"}; !cmp.Equal(got, want) {
		t.Errorf("events = %v, want %v (one minted event, none for the duplicate)", got, want)
	}
}

func testReserveRate(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	for i := range 3 {
		r := reservation(t, b, fmt.Sprintf("j%d", i))
		r.Rate = &store.Limit{N: 2, Window: time.Hour, Who: []string{"mint", "1001"}, Denied: enc(t, b.Now, audit.Denied, fmt.Sprintf("d%d", i), "rate")}
		_, err := s.Reserve(ctx, r)
		var rate *store.RateError
		switch {
		case i < 2 && err != nil:
			t.Fatalf("mint %d: %v", i, err)
		case i == 2 && !errors.As(err, &rate):
			t.Fatalf("mint 3 = %v, want a RateError", err)
		case i == 2 && (rate.RetryAfter <= 0 || rate.RetryAfter > time.Hour):
			t.Errorf("RetryAfter = %s, want within the hour", rate.RetryAfter)
		}
	}
	if _, st, _ := s.Lookup(ctx, "j2"); st != store.Unknown {
		t.Errorf("the refused mint reserved its id: %v", st)
	}
	if got, want := events(t, s), []string{"m-j0", "m-j1", "d2"}; !cmp.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
}

func testApproval(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	for i := range 2 {
		r := reservation(t, b, fmt.Sprintf("a%d", i))
		r.Approval = &store.ApprovalUse{ID: "digest", Until: time.Hour, Denied: enc(t, b.Now, audit.Denied, fmt.Sprintf("ad%d", i), "approval")}
		_, err := s.Reserve(ctx, r)
		if i == 0 && err != nil {
			t.Fatal(err)
		}
		if i == 1 && !errors.Is(err, store.ErrApprovalUsed) {
			t.Fatalf("second use = %v, want ErrApprovalUsed", err)
		}
	}
	if got, want := events(t, s), []string{"m-a0", "ad1"}; !cmp.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
}

func testRedeemOnce(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	if _, err := s.Reserve(ctx, reservation(t, b, "j")); err != nil {
		t.Fatal(err)
	}
	ok, _, err := s.Redeem(ctx, redemption(t, b, "j", "s1", time.Minute, time.Hour))
	if err != nil || !ok {
		t.Fatalf("Redeem = %v, %v", ok, err)
	}
	ok, st, err := s.Redeem(ctx, redemption(t, b, "j", "s2", time.Minute, time.Hour))
	if err != nil || ok || st != store.Consumed {
		t.Fatalf("replay = %v, %v, %v; want refused as consumed", ok, st, err)
	}
	ok, st, err = s.Redeem(ctx, redemption(t, b, "never", "s3", time.Minute, time.Hour))
	if err != nil || ok || st != store.Unknown {
		t.Fatalf("unknown id = %v, %v, %v; want refused as unknown", ok, st, err)
	}
	if _, err := s.GetSession(ctx, "s2"); !errors.Is(err, store.ErrNoSession) {
		t.Errorf("the refused redemption created s2: %v", err)
	}
	got, err := s.GetSession(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sess(b, "s1", time.Hour).ID, got.ID); diff != "" {
		t.Errorf("session: %s", diff)
	}
	if want := []string{"m-j", "r-s1", "c-s2", "u-s3"}; !cmp.Equal(events(t, s), want) {
		t.Errorf("events = %v, want %v", events(t, s), want)
	}
}

func testRedeemRace(t *testing.T, b Backend) {
	ctx := context.Background()
	// Two instances on one Redis race on one token.
	inst := b.Instances(t, 2)
	s1 := inst[0]
	if _, err := s1.Reserve(ctx, reservation(t, b, "race")); err != nil {
		t.Fatal(err)
	}
	const n = 64
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, _, err := inst[i%2].Redeem(ctx, redemption(t, b, "race", fmt.Sprintf("rs%d", i), time.Minute, time.Hour))
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d redemptions won, want exactly 1", wins.Load())
	}
	evs := events(t, s1)
	redeemed, rejected := 0, 0
	for _, id := range evs {
		switch {
		case strings.HasPrefix(id, "r-"):
			redeemed++
		case strings.HasPrefix(id, "c-"):
			rejected++
		}
	}
	if redeemed != 1 || rejected != n-1 {
		t.Errorf("events: %d redeemed, %d rejected; want 1 and %d", redeemed, rejected, n-1)
	}
}

func testTokenExpiry(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	r := reservation(t, b, "short")
	r.TTL = 300 * time.Millisecond
	if _, err := s.Reserve(ctx, r); err != nil {
		t.Fatal(err)
	}
	b.Wait(500 * time.Millisecond)
	if _, st, err := s.Lookup(ctx, "short"); err != nil || st != store.Unknown {
		t.Errorf("after its TTL the id is %v (%v), want unknown: Redis's own expiry", st, err)
	}
}

func testIdle(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	if _, err := s.Reserve(ctx, reservation(t, b, "j")); err != nil {
		t.Fatal(err)
	}
	const idle = 400 * time.Millisecond
	if ok, _, err := s.Redeem(ctx, redemption(t, b, "j", "s", idle, time.Hour)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	b.Wait(idle / 2)
	if _, _, err := s.Touch(ctx, "s"); err != nil {
		t.Fatalf("touch within idle: %v", err)
	}
	b.Wait(idle + 200*time.Millisecond)
	got, lapse, err := s.Touch(ctx, "s")
	if !errors.Is(err, store.ErrNoSession) || lapse != store.LapseIdle || got.ID != "s" {
		t.Fatalf("touch after idle = %q, %q, %v; want the record, idle, ErrNoSession", got.ID, lapse, err)
	}
	if l, err := s.EndLapsed(ctx, got, lapses(t, b, "s")); err != nil || l != store.LapseIdle {
		t.Fatalf("EndLapsed = %q, %v", l, err)
	}
	if _, err := s.EndLapsed(ctx, got, lapses(t, b, "s")); !errors.Is(err, store.ErrNoSession) {
		t.Errorf("second EndLapsed = %v, want ErrNoSession (one end, one event)", err)
	}
	if want := []string{"m-j", "r-s", "idle-s"}; !cmp.Equal(events(t, s), want) {
		t.Errorf("events = %v, want %v", events(t, s), want)
	}
	if list, _ := s.Sessions(ctx, ""); len(list) != 0 {
		t.Errorf("ended session still listed: %v", list)
	}
}

func testCap(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	if _, err := s.Reserve(ctx, reservation(t, b, "j")); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := s.Redeem(ctx, redemption(t, b, "j", "s", time.Hour, 500*time.Millisecond)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	for range 3 { // kept busy: the cap still ends it
		b.Wait(200 * time.Millisecond)
		s.Touch(ctx, "s")
	}
	got, lapse, err := s.Touch(ctx, "s")
	if !errors.Is(err, store.ErrNoSession) || lapse != store.LapseCap {
		t.Fatalf("touch past the cap = %q, %v; want cap", lapse, err)
	}
	if _, err := s.EndLapsed(ctx, got, lapses(t, b, "s")); err != nil {
		t.Fatal(err)
	}
	if want := []string{"m-j", "r-s", "cap-s"}; !cmp.Equal(events(t, s), want) {
		t.Errorf("events = %v, want %v", events(t, s), want)
	}
}

func testEnd(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	for _, j := range []string{"j1", "j2"} {
		if _, err := s.Reserve(ctx, reservation(t, b, j)); err != nil {
			t.Fatal(err)
		}
	}
	s.Redeem(ctx, redemption(t, b, "j1", "s1", time.Hour, time.Hour))
	s.Redeem(ctx, redemption(t, b, "j2", "s2", time.Hour, time.Hour))
	one, _ := s.GetSession(ctx, "s1")
	if err := s.End(ctx, one, enc(t, b.Now, audit.Ended, "logout-s1", "logout"), lapses(t, b, "s1")); err != nil {
		t.Fatal(err)
	}
	if err := s.End(ctx, one, enc(t, b.Now, audit.Ended, "again", "logout"), lapses(t, b, "s1")); !errors.Is(err, store.ErrNoSession) {
		t.Errorf("second End = %v, want ErrNoSession", err)
	}
	two, _ := s.GetSession(ctx, "s2")
	if err := s.End(ctx, two, enc(t, b.Now, audit.Revoked, "revoke-s2", "revoked"), lapses(t, b, "s2")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Touch(ctx, "s1"); !errors.Is(err, store.ErrNoSession) {
		t.Errorf("ended session still touches: %v", err)
	}
	if want := []string{"m-j1", "m-j2", "r-s1", "r-s2", "logout-s1", "revoke-s2"}; !cmp.Equal(events(t, s), want) {
		t.Errorf("events = %v, want %v", events(t, s), want)
	}
	if due, _ := s.Due(ctx, 10); len(due) != 0 {
		t.Errorf("ended sessions left in the deadlines: %v", due)
	}
}

func testDue(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	if _, err := s.Reserve(ctx, reservation(t, b, "j")); err != nil {
		t.Fatal(err)
	}
	r := redemption(t, b, "j", "s", time.Hour, time.Hour)
	r.Unused = 300 * time.Millisecond
	if ok, _, err := s.Redeem(ctx, r); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if due, _ := s.Due(ctx, 10); len(due) != 0 {
		t.Fatalf("due before its deadline: %v", due)
	}
	b.Wait(500 * time.Millisecond)
	due, err := s.Due(ctx, 10)
	if err != nil || !cmp.Equal(due, []string{"s"}) {
		t.Fatalf("Due = %v, %v; want [s]", due, err)
	}
	rec, err := s.SessionRecord(ctx, "s")
	if err != nil {
		t.Fatalf("the lapsed record is gone before its end was recorded: %v", err)
	}
	if l, err := s.EndLapsed(ctx, rec, lapses(t, b, "s")); err != nil || l != store.LapseUnused {
		t.Fatalf("EndLapsed = %q, %v; want unused", l, err)
	}
	if due, _ := s.Due(ctx, 10); len(due) != 0 {
		t.Errorf("still due after its end: %v", due)
	}
	if want := []string{"m-j", "r-s", "unused-s"}; !cmp.Equal(events(t, s), want) {
		t.Errorf("events = %v, want %v", events(t, s), want)
	}
}

func testList(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	for i, admin := range []string{"1001", "1001", "2002"} {
		j := fmt.Sprintf("j%d", i)
		r := reservation(t, b, j)
		r.Grant.Actor.ID = admin
		if _, err := s.Reserve(ctx, r); err != nil {
			t.Fatal(err)
		}
		red := redemption(t, b, j, fmt.Sprintf("s%d", i), time.Hour, time.Duration(i+1)*time.Hour)
		red.Session.Actor.ID = admin
		if ok, _, err := s.Redeem(ctx, red); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	all, err := s.Sessions(ctx, "")
	if err != nil || len(all) != 3 || all[0].ID != "s0" || all[2].ID != "s2" {
		t.Fatalf("Sessions = %v, %v; want s0, s1, s2 soonest cap first", all, err)
	}
	mine, _ := s.Sessions(ctx, "1001")
	if len(mine) != 2 {
		t.Errorf("admin 1001 has %d sessions, want 2", len(mine))
	}
}

func testCounted(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	l := store.Limit{N: 3, Window: time.Minute, Who: []string{"login", "192.0.2.1"}}
	var wg sync.WaitGroup
	var refused atomic.Int32
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.AppendCounted(ctx, enc(t, b.Now, audit.Rejected, fmt.Sprintf("f%d", i), "bad"), l)
			var rate *store.RateError
			if errors.As(err, &rate) {
				refused.Add(1)
			} else if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if refused.Load() != 7 || len(events(t, s)) != 3 {
		t.Errorf("10 concurrent failures, limit 3: %d refused, %d events; want exactly 7 and 3", refused.Load(), len(events(t, s)))
	}
}

func testFolded(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	summary := enc(t, b.Now, audit.Denied, "summary", "folded "+store.FoldedMarker)
	f := store.Fold{N: 2, Window: 300 * time.Millisecond, Who: []string{"deny", "1001"}, Summary: summary}
	folded := 0
	for i := range 5 {
		ok, err := s.AppendFolded(ctx, enc(t, b.Now, audit.Denied, fmt.Sprintf("d%d", i), "x"), f)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			folded++
		}
	}
	if folded != 3 {
		t.Fatalf("folded %d of 5 with N 2, want 3", folded)
	}
	b.Wait(400 * time.Millisecond)
	if _, err := s.AppendFolded(ctx, enc(t, b.Now, audit.Denied, "d5", "x"), f); err != nil {
		t.Fatal(err)
	}
	l := audit.NewLog(s, time.Now)
	var details []string
	l.Range(ctx, "-", func(e audit.Entry) bool { details = append(details, e.Event.ID+":"+e.Event.Detail); return true })
	want := []string{"d0:x", "d1:x", "summary:folded 3", "d5:x"}
	if !cmp.Equal(details, want) {
		t.Errorf("events = %v, want %v", details, want)
	}
}

// testLostExpiry: a window counter that lost its expiry (an operator's
// PERSIST, a restore) still ends its window in time, for the counted
// failures and for the folded denials, whose summary is then written.
func testLostExpiry(t *testing.T, b Backend) {
	ctx := context.Background()
	prefix := fmt.Sprintf("{stx%d-%d}", time.Now().UnixNano()%1e9, prefixes.Add(1))
	s := b.instances(t, 1, prefix)[0]
	c, err := redisurl.NewClient(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	persist := func(key string) {
		t.Helper()
		if ok, err := c.Persist(ctx, prefix+":"+key).Result(); !ok || err != nil {
			t.Fatalf("PERSIST %s = %v, %v; want the counter to have had an expiry", key, ok, err)
		}
	}
	const window = 300 * time.Millisecond

	l := store.Limit{N: 1, Window: window, Who: []string{"login", "192.0.2.9"}}
	if err := s.AppendCounted(ctx, enc(t, b.Now, audit.Rejected, "c0", "bad"), l); err != nil {
		t.Fatal(err)
	}
	persist("rate:login:192.0.2.9")
	var rate *store.RateError
	if err := s.AppendCounted(ctx, enc(t, b.Now, audit.Rejected, "c1", "bad"), l); !errors.As(err, &rate) || rate.RetryAfter <= 0 || rate.RetryAfter > window {
		t.Fatalf("second failure = %v; want a RateError within the window's %v", err, window)
	}
	b.Wait(window + 100*time.Millisecond)
	if err := s.AppendCounted(ctx, enc(t, b.Now, audit.Rejected, "c2", "bad"), l); err != nil {
		t.Fatalf("after the window = %v; want counted again", err)
	}

	summary := enc(t, b.Now, audit.Denied, "summary", "folded "+store.FoldedMarker)
	f := store.Fold{N: 1, Window: window, Who: []string{"deny", "1002"}, Summary: summary}
	for i, want := range []bool{false, true} {
		if i == 1 {
			persist("rate:fold:deny:1002")
		}
		if folded, err := s.AppendFolded(ctx, enc(t, b.Now, audit.Denied, fmt.Sprintf("d%d", i), "x"), f); folded != want || err != nil {
			t.Fatalf("denial %d folded = %v, %v; want %v", i, folded, err, want)
		}
	}
	b.Wait(window + 100*time.Millisecond)
	if folded, err := s.AppendFolded(ctx, enc(t, b.Now, audit.Denied, "d2", "x"), f); folded || err != nil {
		t.Fatalf("denial after the window folded = %v, %v; want recorded", folded, err)
	}
	var details []string
	audit.NewLog(s, time.Now).Range(ctx, "-", func(e audit.Entry) bool { details = append(details, e.Event.ID+":"+e.Event.Detail); return true })
	want := []string{"c0:bad", "c2:bad", "d0:x", "summary:folded 1", "d2:x"}
	if !cmp.Equal(details, want) {
		t.Errorf("events = %v, want %v", details, want)
	}
}

func testIndexes(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	for i := range 30 {
		ev := audit.Event{ID: fmt.Sprintf("e%d", i), Type: audit.Minted, Actor: actor, Subject: audit.Subject{Collection: "users", ID: fmt.Sprint(i % 3)}}
		if i%10 == 0 {
			ev.Actor = audit.Actor{ID: "7", Email: "Grace@Example.com"}
		}
		e, err := audit.Encoder{Now: b.Now}.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	l := audit.NewLog(s, time.Now)
	ids := func(f audit.Filter, limit int) []string {
		var out []string
		cursor := ""
		for {
			p, err := l.Query(ctx, f, limit, cursor)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Events {
				out = append(out, e.ID)
			}
			if p.NextCursor == nil {
				return out
			}
			if len(p.Events) == 0 {
				t.Fatalf("an empty page with a cursor for %+v", f)
			}
			cursor = *p.NextCursor
		}
	}
	if got, want := ids(audit.Filter{Subject: "users:1"}, 4), []string{"e28", "e25", "e22", "e19", "e16", "e13", "e10", "e7", "e4", "e1"}; !cmp.Equal(got, want) {
		t.Errorf("subject users:1 = %v, want %v", got, want)
	}
	if got, want := ids(audit.Filter{Actor: "grace@example.com"}, 2), []string{"e20", "e10", "e0"}; !cmp.Equal(got, want) {
		t.Errorf("actor by email = %v, want %v", got, want)
	}
	if got := ids(audit.Filter{Actor: "7", Subject: "0"}, 10); !cmp.Equal(got, []string{"e0"}) {
		t.Errorf("actor 7 and subject 0 = %v, want [e0]", got)
	}
}

func testCheckpoint(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	ok, err := s.AppendCheckpoint(ctx, "", 1, []byte(`{"seq":1}`))
	if err != nil || !ok {
		t.Fatalf("first checkpoint = %v, %v", ok, err)
	}
	first, _, _ := s.LastCheckpoint(ctx)
	if ok, _ := s.AppendCheckpoint(ctx, "", 1, []byte(`{"seq":1}`)); ok {
		t.Error("a second first checkpoint forked the chain")
	}
	if ok, err := s.AppendCheckpoint(ctx, first.ID, 2, []byte(`{"seq":2}`)); err != nil || !ok {
		t.Fatalf("second checkpoint = %v, %v", ok, err)
	}
	if n, _ := s.Sealed(ctx); n != 2 {
		t.Errorf("Sealed = %d, want 2", n)
	}
}

func testTrim(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	var ids []string
	for i := range 4 {
		id, err := s.Append(ctx, enc(t, b.Now, audit.Minted, fmt.Sprintf("e%d", i), ""))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	s.AppendCheckpoint(ctx, "", 1, []byte(`{"seq":1}`))
	cp1, _, _ := s.LastCheckpoint(ctx)
	s.AppendCheckpoint(ctx, cp1.ID, 2, []byte(`{"seq":2}`))
	cp2, _, _ := s.LastCheckpoint(ctx)
	n, err := s.Trim(ctx, ids[2], cp2.ID)
	if err != nil || n != 2 {
		t.Fatalf("Trim = %d, %v; want 2 events removed", n, err)
	}
	if got := events(t, s); !cmp.Equal(got, []string{"e2", "e3"}) {
		t.Errorf("events after trim = %v", got)
	}
	cps, _ := s.Checkpoints(ctx, "-", "+", 10)
	if len(cps) != 1 || cps[0].ID != cp2.ID {
		t.Errorf("checkpoints after trim = %v, want only the anchor", cps)
	}
}

func testLease(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	if ok, err := s.SweepLease(ctx, "a", 300*time.Millisecond); !ok || err != nil {
		t.Fatalf("a takes the lease: %v, %v", ok, err)
	}
	if ok, _ := s.SweepLease(ctx, "b", time.Second); ok {
		t.Fatal("b took a lease a holds")
	}
	if ok, _ := s.SweepLease(ctx, "a", 300*time.Millisecond); !ok {
		t.Fatal("a could not renew its lease")
	}
	b.Wait(500 * time.Millisecond)
	if ok, _ := s.SweepLease(ctx, "b", time.Second); !ok {
		t.Fatal("b could not take the lease a let lapse")
	}
}

// details are the redemption's details by outcome (the login's wording is
// the login's; here they only need to tell the outcomes apart).
var details = &store.Details{Unknown: "unknown", Disagree: "disagree", Replay: "replay", ReplayW: "replay W", ReplayR: "replay R",
	RedeemedW: "W", RedeemedR: "R", Superseding: "R superseding", Superseded: "superseded", FirstParty: "first party", Discarded: "discarded"}

var claimsActor = audit.Actor{ID: actor.ID, Email: actor.Email}

// claimsRedemption is a redemption as the login builds it: the session and
// the events from a token's claims alone (actor id and email, subject),
// without details: the script gives each its outcome's.
func claimsRedemption(t testing.TB, b Backend, jti, sid, cookie string, claims audit.Actor, subj audit.Subject) store.Redemption {
	t.Helper()
	start := b.Now().UTC().Truncate(time.Millisecond)
	sess := store.Session{ID: sid, Actor: claims, Subject: subj, TokenID: jti, StartedAt: start, ExpiresAt: start.Add(time.Hour), IP: "192.0.2.1"}
	e := func(id string, typ audit.Type, sid string) audit.Encoded {
		ev := audit.Event{ID: id, Time: start, Type: typ, Actor: claims, Subject: subj, TokenID: jti, SessionID: sid, IP: "192.0.2.1", UserAgent: "test"}
		if typ == audit.Ended {
			ev.TokenID = "" // the script names the superseded session's
		}
		enc, err := audit.Encoder{Now: b.Now}.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		return enc
	}
	r := store.Redemption{JTI: jti, Session: sess, Idle: time.Hour, Details: details, Cookie: cookie,
		Redeemed: e("r-"+sid, audit.Redeemed, sid), Unknown: e("x-"+sid, audit.Rejected, ""), Superseded: e("e-"+sid, audit.Ended, "")}
	if cookie != "" {
		r.Discarded = e("d-"+sid, audit.Rejected, cookie)
	}
	return r
}

// want is the stored form an event of the redemption r must have: encoded
// with the grant's context, as if the login had read the grant.
func want(t testing.TB, r store.Redemption, g store.Grant, id string, typ audit.Type, tokenID, sid, detail string) string {
	t.Helper()
	ev := audit.Event{ID: id, Time: r.Session.StartedAt, Type: typ, Actor: g.Actor, Requester: g.Requester, Subject: g.Subject,
		Reason: g.Reason, TokenID: tokenID, SessionID: sid, IP: "192.0.2.1", UserAgent: "test", Detail: detail}
	enc, err := audit.Encoder{}.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	return untimed(string(enc.JSON))
}

// eventTime is an encoded event's "time" value (the encoder writes it
// second, after the id).
var eventTime = regexp.MustCompile(`^(\{"id":"[^"]*","time":")([^"]*)"`)

// untimed is an encoded event with its time left out: the store writes the
// Redis server's (testOneClock), so the rest is compared byte for byte.
func untimed(s string) string { return eventTime.ReplaceAllString(s, `${1}"`) }

// raw returns the stored bytes of the audit stream's events, by event id,
// untimed; each event's stored time must be its stream id's (one clock).
func raw(t testing.TB, s *store.Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := audit.NewLog(s, time.Now).Range(context.Background(), "-", func(e audit.Entry) bool {
		if got, want := e.Event.Time, idTime(e.StreamID); !got.Equal(want) {
			t.Errorf("event %s stored with time %s, not its stream id %s's", e.Event.ID, got, e.StreamID)
		}
		out[e.Event.ID] = untimed(e.Raw)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testRedeemContext: the session and the events of a redemption built from
// the claims alone carry the grant's context (the actor's team and role,
// the requester, the reason), byte for byte as the audit encoder writes
// them, and are indexed under the grant's requester too.
func testRedeemContext(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	r := reservation(t, b, "j")
	r.Grant.Requester = &audit.Actor{ID: "7", Email: "Grace@Example.com"}
	r.Grant.Reason = `ticket <1234> & "more"` + "\u2028é"
	if _, err := s.Reserve(ctx, r); err != nil {
		t.Fatal(err)
	}
	red := claimsRedemption(t, b, "j", "s", "", claimsActor, subject)
	if ok, _, err := s.Redeem(ctx, red); !ok || err != nil {
		t.Fatalf("Redeem = %v, %v", ok, err)
	}
	replay := claimsRedemption(t, b, "j", "s2", "", claimsActor, subject)
	if ok, st, err := s.Redeem(ctx, replay); ok || st != store.Consumed || err != nil {
		t.Fatalf("replay = %v, %v, %v; want refused as consumed", ok, st, err)
	}
	got := raw(t, s)
	for id, w := range map[string]string{
		"r-s":  want(t, red, r.Grant, "r-s", audit.Redeemed, "j", "s", ""),
		"x-s2": want(t, replay, r.Grant, "x-s2", audit.Rejected, "j", "", "replay"),
	} {
		if got[id] != w {
			t.Errorf("event %s:\n got %s\nwant %s", id, got[id], w)
		}
	}
	sess, err := s.GetSession(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	wantSess := red.Session
	wantSess.Actor, wantSess.Requester, wantSess.Reason = r.Grant.Actor, r.Grant.Requester, r.Grant.Reason
	if diff := cmp.Diff(wantSess, sess); diff != "" {
		t.Errorf("session (-want +got):\n%s", diff)
	}
	p, err := audit.NewLog(s, time.Now).Query(ctx, audit.Filter{Actor: "grace@example.com"}, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range p.Events {
		ids = append(ids, e.ID)
	}
	if want := []string{"x-s2", "r-s"}; !cmp.Equal(ids, want) { // the minted event names no requester
		t.Errorf("the requester's index = %v, want %v", ids, want)
	}
}

// testRedeemDisagree: a token whose claims are not its grant's (actor id,
// subject collection or id) is refused with its event, from the claims,
// and stays unconsumed.
func testRedeemDisagree(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	if _, err := s.Reserve(ctx, reservation(t, b, "j")); err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		actor audit.Actor
		subj  audit.Subject
	}{
		{audit.Actor{ID: "2002", Email: actor.Email}, subject},
		{claimsActor, audit.Subject{Collection: "companies", ID: subject.ID}},
		{claimsActor, audit.Subject{Collection: subject.Collection, ID: "43"}},
	} {
		sid := fmt.Sprintf("s%d", i)
		red := claimsRedemption(t, b, "j", sid, "", c.actor, c.subj)
		ok, _, err := s.Redeem(ctx, red)
		if ok || !errors.Is(err, store.ErrDisagree) {
			t.Fatalf("%+v: Redeem = %v, %v; want ErrDisagree", c, ok, err)
		}
		if _, err := s.GetSession(ctx, sid); !errors.Is(err, store.ErrNoSession) {
			t.Errorf("%+v: the refused redemption opened %s: %v", c, sid, err)
		}
		claims := store.Grant{Actor: c.actor, Subject: c.subj}
		if got, w := raw(t, s)["x-"+sid], want(t, red, claims, "x-"+sid, audit.Rejected, "j", "", "disagree"); got != w {
			t.Errorf("refusal:\n got %s\nwant %s", got, w)
		}
	}
	if ok, _, err := s.Redeem(ctx, claimsRedemption(t, b, "j", "s", "", claimsActor, subject)); !ok || err != nil {
		t.Fatalf("the agreeing token after the refusals = %v, %v; want redeemed", ok, err)
	}
}

// testRedeemLegacy: a grant stored before grants held their audit context
// still redeems, its events and session with the claims' context.
func testRedeemLegacy(t *testing.T, b Backend) {
	ctx := context.Background()
	prefix := fmt.Sprintf("{stl%d-%d}", time.Now().UnixNano()%1e9, prefixes.Add(1))
	s := b.instances(t, 1, prefix)[0]
	c, err := redisurl.NewClient(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := reservation(t, b, "j").Grant
	old, err := json.Marshal(g) // the grant as stored before: no ctx, no idx
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, prefix+":jti:old", string(old), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	red := claimsRedemption(t, b, "old", "s", "", claimsActor, subject)
	if ok, _, err := s.Redeem(ctx, red); !ok || err != nil {
		t.Fatalf("Redeem of a grant without context = %v, %v", ok, err)
	}
	if got, w := raw(t, s)["r-s"], untimed(string(red.Redeemed.JSON)); got != w {
		t.Errorf("event:\n got %s\nwant %s (the claims')", got, w)
	}
	if sess, err := s.GetSession(ctx, "s"); err != nil || !cmp.Equal(sess, red.Session) {
		t.Errorf("session = %+v, %v; want %+v", sess, err, red.Session)
	}
}

// testRedeemAuto: an auto-delivery grant's two credentials in each order
// give at most one live session, each outcome with its event; the
// superseded session's end names it and its token, and is published.
func testRedeemAuto(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	ends := s.SubscribeEnds(ctx)
	defer ends.Close()
	for e := ends.Receive(ctx, 5*time.Second); !e.Subscribed; e = ends.Receive(ctx, 5*time.Second) {
		if e.Down != nil {
			t.Fatal(e.Down)
		}
	}
	grant := func(n string) (store.Grant, store.Grant) {
		r := reservation(t, b, "w"+n)
		r.Grant.Requester = &audit.Actor{ID: "7"}
		w, rg := r.Grant, r.Grant
		w.GrantID, w.Credential, w.PairJTI = "g"+n, store.CredentialWebhook, "r"+n
		rg.GrantID, rg.Credential, rg.PairJTI = "g"+n, store.CredentialRedirect, "w"+n
		r.Grant, r.Pair = w, &store.Pair{JTI: "r" + n, Grant: rg}
		if _, err := s.Reserve(ctx, r); err != nil {
			t.Fatal(err)
		}
		return w, rg
	}
	redeem := func(jti, sid, cookie string) (store.Redemption, bool, error) {
		red := claimsRedemption(t, b, jti, sid, cookie, claimsActor, subject)
		ok, _, err := s.Redeem(ctx, red)
		return red, ok, err
	}
	check := func(red store.Redemption, g store.Grant, id string, typ audit.Type, tokenID, sid, detail string) {
		t.Helper()
		if got, w := raw(t, s)[id], want(t, red, g, id, typ, tokenID, sid, detail); got != w {
			t.Errorf("event %s:\n got %s\nwant %s", id, got, w)
		}
	}

	// The webhook's cookie kept: the redirect credential is not needed.
	w1, r1 := grant("1")
	red, ok, err := redeem("w1", "sw1", "")
	if !ok || err != nil {
		t.Fatalf("W = %v, %v", ok, err)
	}
	check(red, w1, "r-sw1", audit.Redeemed, "w1", "sw1", "W")
	red, ok, err = redeem("r1", "sr1", "sw1")
	if ok || !errors.Is(err, store.ErrDiscarded) {
		t.Fatalf("R with the grant's live session = %v, %v; want ErrDiscarded", ok, err)
	}
	check(red, r1, "d-sr1", audit.Rejected, "r1", "sw1", "discarded")
	if _, err := s.GetSession(ctx, "sw1"); err != nil {
		t.Errorf("the kept session: %v", err)
	}
	red, _, _ = redeem("r1", "sr1b", "")
	check(red, r1, "x-sr1b", audit.Rejected, "r1", "", "replay R")

	// The webhook's cookie dropped: the redirect credential supersedes it.
	w2, r2 := grant("2")
	if _, ok, err := redeem("w2", "sw2", "sw1"); !ok || err != nil { // another grant's cookie
		t.Fatalf("W = %v, %v", ok, err)
	}
	red, ok, err = redeem("r2", "sr2", "")
	if !ok || err != nil {
		t.Fatalf("R without the cookie = %v, %v", ok, err)
	}
	check(red, r2, "e-sr2", audit.Ended, "w2", "sw2", "superseded")
	check(red, r2, "r-sr2", audit.Redeemed, "r2", "sr2", "R superseding")
	if _, err := s.GetSession(ctx, "sw2"); !errors.Is(err, store.ErrNoSession) {
		t.Errorf("the superseded session: %v, want ErrNoSession", err)
	}
	for e := ends.Receive(ctx, 5*time.Second); e.SID != "sw2"; e = ends.Receive(ctx, 5*time.Second) {
		if e.Down != nil || (e.SID == "" && !e.Subscribed) {
			t.Fatalf("no end published for the superseded session: %+v", e)
		}
	}
	_ = w2

	// The start page first: the webhook credential is refused.
	w3, r3 := grant("3")
	red, ok, err = redeem("r3", "sr3", "")
	if !ok || err != nil {
		t.Fatalf("R first = %v, %v", ok, err)
	}
	check(red, r3, "r-sr3", audit.Redeemed, "r3", "sr3", "R")
	red, ok, err = redeem("w3", "sw3", "")
	if ok || !errors.Is(err, store.ErrFirstParty) {
		t.Fatalf("W after R = %v, %v; want ErrFirstParty", ok, err)
	}
	check(red, w3, "x-sw3", audit.Rejected, "w3", "", "first party")
	red, _, _ = redeem("w3", "sw3b", "")
	check(red, w3, "x-sw3b", audit.Rejected, "w3", "", "replay W")

	live, err := s.Sessions(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var sids []string
	for _, x := range live {
		sids = append(sids, x.ID)
	}
	slices.Sort(sids)
	if want := []string{"sr2", "sr3", "sw1"}; !cmp.Equal(sids, want) {
		t.Errorf("live sessions = %v, want %v: one per grant", sids, want)
	}

	// An auto-delivery credential needs the superseded event.
	grant("4")
	red = claimsRedemption(t, b, "w4", "sw4", "", claimsActor, subject)
	red.Superseded = audit.Encoded{}
	if ok, _, err := s.Redeem(ctx, red); ok || err == nil {
		t.Errorf("auto credential without the superseded event = %v, %v; want an error", ok, err)
	}
}

// idTime is the time of a stream id: its millisecond.
func idTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return time.UnixMilli(n).UTC()
}

// testOneClock: every script that appends an event stores as its time its
// stream id's (the Redis server's clock), whatever the writer's clock says
// (here three weeks off); ids keep increasing when the stream's newest id
// is ahead of the server's clock (a primary whose clock is behind its
// predecessor's), and when that newest entry was deleted.
func testOneClock(t *testing.T, b Backend) {
	ctx := context.Background()
	prefix := fmt.Sprintf("{stc%d-%d}", time.Now().UnixNano()%1e9, prefixes.Add(1))
	s := b.instances(t, 1, prefix)[0]
	skewed := func() time.Time { return b.Now().Add(-21 * 24 * time.Hour) }
	stamp := func(id string) audit.Encoded { return enc(t, skewed, audit.Rejected, id, "skewed") }
	if _, err := s.Append(ctx, stamp("a")); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendCounted(ctx, stamp("c"), store.Limit{N: 5, Window: time.Minute, Who: []string{"login", "192.0.2.7"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendFolded(ctx, stamp("f"), store.Fold{N: 5, Window: time.Minute, Who: []string{"deny", "1001"}, Summary: stamp("fs")}); err != nil {
		t.Fatal(err)
	}
	r := reservation(t, b, "j")
	r.Minted = stamp("m")
	if _, err := s.Reserve(ctx, r); err != nil {
		t.Fatal(err)
	}
	// The stream's newest id an hour ahead of the server's clock (kept),
	// then its newest id two hours ahead, deleted.
	c, err := redisurl.NewClient(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ahead := time.Now().Add(time.Hour).UnixMilli()
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: prefix + ":audit", ID: fmt.Sprintf("%d-5", ahead), Values: []string{"e", "{}"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, stamp("after-ahead")); err != nil {
		t.Fatal(err)
	}
	ahead += time.Hour.Milliseconds()
	deleted := fmt.Sprintf("%d-0", ahead)
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: prefix + ":audit", ID: deleted, Values: []string{"e", "{}"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XDel(ctx, prefix+":audit", deleted).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, stamp("after-deleted")); err != nil {
		t.Fatal(err)
	}

	var ids []string
	prev := ""
	err = audit.NewLog(s, time.Now).Range(ctx, "-", func(e audit.Entry) bool {
		if e.Raw == "{}" {
			return true
		}
		ids = append(ids, e.Event.ID)
		if got, want := e.Event.Time, idTime(e.StreamID); !got.Equal(want) {
			t.Errorf("event %s: stored time %s, its stream id %s's is %s", e.Event.ID, got, e.StreamID, want)
		}
		if prev != "" && !audit.StreamLess(prev, e.StreamID) {
			t.Errorf("event %s: stream id %s after %s", e.Event.ID, e.StreamID, prev)
		}
		prev = e.StreamID
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "c", "f", "m", "after-ahead", "after-deleted"}; !cmp.Equal(ids, want) {
		t.Errorf("events %v, want %v", ids, want)
	}
	// A real Redis refuses an id at or below the deleted entry's (its
	// last-generated-id): "after-deleted" appended at all is the proof.
	// (miniredis compares with the newest entry only.)
}

// testFoldedLimit: a fold with a failure limit counts each event against
// it first; past it nothing is appended nor folded, and the time left is
// returned.
func testFoldedLimit(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	summary := enc(t, b.Now, audit.Rejected, "summary", "folded "+store.FoldedMarker)
	f := store.Fold{N: 1, Window: time.Minute, Who: []string{"replay", "1001"}, Summary: summary,
		Limit: &store.Limit{N: 3, Window: time.Minute, Who: []string{"login", "192.0.2.1"}}}
	var got []string
	for i := range 5 {
		folded, err := s.AppendFolded(ctx, enc(t, b.Now, audit.Rejected, fmt.Sprintf("r%d", i), "replay"), f)
		var rate *store.RateError
		switch {
		case errors.As(err, &rate) && rate.RetryAfter > 0 && rate.RetryAfter <= time.Minute:
			got = append(got, "rate")
		case err != nil:
			t.Fatal(err)
		case folded:
			got = append(got, "folded")
		default:
			got = append(got, "appended")
		}
	}
	if want := []string{"appended", "folded", "folded", "rate", "rate"}; !cmp.Equal(got, want) {
		t.Errorf("outcomes %v, want %v", got, want)
	}
	if got, want := events(t, s), []string{"r0"}; !cmp.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

// testDeferredReplay: with DeferReplay, a replay appends nothing and
// returns its event (as Redeem would have appended it) and how often the
// token was presented again.
func testDeferredReplay(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	if _, err := s.Reserve(ctx, reservation(t, b, "j")); err != nil {
		t.Fatal(err)
	}
	red := redemption(t, b, "j", "s", time.Minute, time.Hour)
	red.DeferReplay = true
	if ok, _, err := s.Redeem(ctx, red); !ok || err != nil {
		t.Fatalf("Redeem = %v, %v", ok, err)
	}
	for n := int64(1); n <= 2; n++ {
		again := redemption(t, b, "j", fmt.Sprintf("s%d", n), time.Minute, time.Hour)
		again.DeferReplay = true
		ok, st, err := s.Redeem(ctx, again)
		var rep *store.Replayed
		if ok || st != store.Consumed || !errors.As(err, &rep) {
			t.Fatalf("replay %d = %v, %v, %v; want consumed and *Replayed", n, ok, st, err)
		}
		var ev audit.Event
		if rep.N != n || json.Unmarshal(rep.Event.JSON, &ev) != nil || ev.ID != "c-s"+fmt.Sprint(n) || ev.Detail != "consumed" || len(rep.Event.Indexes) == 0 {
			t.Errorf("replay %d: N %d, event %s, indexes %v; want N %d, the consumed event and its indexes", n, rep.N, rep.Event.JSON, rep.Event.Indexes, n)
		}
	}
	if got, want := events(t, s), []string{"m-j", "r-s"}; !cmp.Equal(got, want) {
		t.Errorf("events %v, want %v (replays append nothing themselves)", got, want)
	}
}
