package session_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/store/storetest"
	"github.com/impersonator/impersonator/internal/token"
	"github.com/impersonator/impersonator/internal/token/tokentest"
)

// countingStore counts the Redis checks of the session hot path.
type countingStore struct {
	*store.Store
	touches atomic.Int64
}

func (c *countingStore) Touch(ctx context.Context, sid string) (store.Session, store.Lapse, error) {
	c.touches.Add(1)
	return c.Store.Touch(ctx, sid)
}

type instance struct {
	h     *session.Handlers
	st    *countingStore
	cache *session.Cache
}

// cacheWorld is two instances with running caches on one redis-server.
type cacheWorld struct {
	srv    *redistest.Server
	keys   *token.Keyset
	stores []*store.Store
	inst   [2]instance
}

const idle = 10 * time.Minute

func newCacheWorld(t *testing.T) *cacheWorld { return newCacheWorldIdle(t, idle) }

func newCacheWorldIdle(t *testing.T, idle time.Duration) *cacheWorld {
	srv := redistest.StartServer(t)
	w := &cacheWorld{srv: srv, keys: tokentest.Keyset(t, "")}
	w.stores = storetest.Backend{URL: srv.URL(), Now: time.Now}.Instances(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range w.inst {
		cs := &countingStore{Store: w.stores[i]}
		cache := session.NewCache(idle)
		go cache.Run(ctx, w.stores[i], log)
		w.inst[i] = instance{st: cs, cache: cache, h: session.New(session.Options{
			Log: log, Store: cs, Verifier: token.NewVerifier(w.keys, "http://imp.test", "http://app.test", time.Now),
			Cookie: session.NewCookie("http://imp.test", config.Redirect), Events: audit.Encoder{}, Cache: cache,
		})}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !w.inst[0].cache.Subscribed() || !w.inst[1].cache.Subscribed() {
		if time.Now().After(deadline) {
			t.Fatal("the caches never subscribed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return w
}

// open opens a session directly in the store (as a login does) and returns
// its cookie.
func (w *cacheWorld) open(t *testing.T) (*http.Cookie, store.Session) { return w.openIdle(t, idle) }

func (w *cacheWorld) openIdle(t *testing.T, idle time.Duration) (*http.Cookie, store.Session) {
	t.Helper()
	c := token.Claims{Act: token.Actor{Sub: "1001", Email: "ada@example.com"}, Collection: "users", SID: token.NewJTI()}
	c.Subject = "42"
	raw, issued, err := token.NewIssuer(w.keys, "http://imp.test", "http://app.test", time.Now).Issue(token.Session, c, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(typ audit.Type) audit.Encoded {
		e, err := audit.Encoder{}.Encode(audit.Event{Type: typ, Actor: audit.Actor{ID: "1001"}, Subject: audit.Subject{Collection: "users", ID: "42"}})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	st := w.stores[2]
	jti := token.NewJTI()
	g := store.Grant{Actor: audit.Actor{ID: "1001", Email: "ada@example.com"}, Subject: audit.Subject{Collection: "users", ID: "42"}}
	if _, err := st.Reserve(context.Background(), store.Reservation{JTI: jti, Grant: g, TTL: time.Minute, Minted: enc(audit.Minted)}); err != nil {
		t.Fatal(err)
	}
	sess := store.Session{ID: c.SID, Actor: g.Actor, Subject: g.Subject, TokenID: jti, StartedAt: issued.IssuedAt.Time, ExpiresAt: issued.ExpiresAt.Time}
	if ok, _, err := st.Redeem(context.Background(), store.Redemption{JTI: jti, Session: sess, Idle: idle,
		Redeemed: enc(audit.Redeemed), Unknown: enc(audit.Rejected), Consumed: enc(audit.Rejected)}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	return &http.Cookie{Name: session.CookieName, Value: raw}, sess
}

func check(h *session.Handlers, c *http.Cookie) int {
	req := httptest.NewRequest(http.MethodGet, "/impersonation/session", nil)
	req.AddCookie(c)
	rec := httptest.NewRecorder()
	if err := h.Session(rec, req); err != nil {
		return http.StatusUnauthorized
	}
	return rec.Code
}

// TestRevocationPropagates: the session check is served from memory, and a
// revocation on instance A reaches instance B at once, through the
// session-ends channel.
func TestRevocationPropagates(t *testing.T) {
	w := newCacheWorld(t)
	a, b := w.inst[0], w.inst[1]
	cookie, sess := w.open(t)
	for range 5 {
		if code := check(b.h, cookie); code != 200 {
			t.Fatalf("B: %d, want 200", code)
		}
	}
	if n := b.st.touches.Load(); n != 1 {
		t.Errorf("5 checks on B made %d Redis round trips, want 1 (then memory)", n)
	}
	rv := session.Revoker{Store: a.st, Events: audit.Encoder{}}
	start := time.Now()
	if err := rv.Revoke(context.Background(), sess.ID, session.RequestInfo{}, "test"); err != nil {
		t.Fatal(err)
	}
	for check(b.h, cookie) == 200 {
		if time.Since(start) > 2*time.Second {
			t.Fatal("B still serves the revoked session after 2 s")
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("revoked on A, refused by B after %s", took)
	if took > 100*time.Millisecond {
		t.Errorf("propagation took %s, want within 100ms", took)
	}
}

// TestSubscriptionLossFallsBack: when the subscription connection is
// killed, B checks every request in Redis (a revocation it could have missed
// is still seen) until it has subscribed again.
func TestSubscriptionLossFallsBack(t *testing.T) {
	w := newCacheWorld(t)
	b := w.inst[1]
	cookie, sess := w.open(t)
	check(b.h, cookie)
	check(b.h, cookie)
	before := b.st.touches.Load()
	if before != 1 {
		t.Fatalf("%d round trips before the kill, want 1", before)
	}
	admin := redis.NewClient(&redis.Options{Addr: w.srv.Addr})
	defer admin.Close()
	if err := admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	// Until B has noticed, it may still serve from memory; from the moment
	// it has, every check goes to Redis until it resubscribes.
	deadline := time.Now().Add(10 * time.Second)
	for b.cache.Subscribed() && time.Now().Before(deadline) && b.st.touches.Load() == before {
		check(b.h, cookie)
		time.Sleep(time.Millisecond)
	}
	// Down, or subscribed again in a new epoch: either way the entry cached
	// before the break is not trusted, and the next check reads Redis.
	check(b.h, cookie)
	if b.st.touches.Load() == before {
		t.Fatal("B never checked Redis after its subscription was killed")
	}
	// End the session without publishing (as if the message were lost):
	// B, checking Redis, refuses it anyway.
	raw := redis.NewClient(&redis.Options{Addr: w.srv.Addr})
	defer raw.Close()
	keys, _ := raw.Keys(context.Background(), "*:session:"+sess.ID).Result()
	for _, k := range keys {
		raw.Del(context.Background(), k)
	}
	if code := check(b.h, cookie); code == 200 && !b.cache.Subscribed() {
		t.Error("B served a session that no longer exists while unsubscribed")
	}
	for !b.cache.Subscribed() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !b.cache.Subscribed() {
		t.Fatal("B never resubscribed")
	}
	if code := check(b.h, cookie); code != http.StatusUnauthorized {
		t.Errorf("after resubscribing, the deleted session: %d, want 401", code)
	}
}

// TestCachedSessionWritesLastSeen: a session served from memory has its
// last-seen time written to Redis at most every idle/10, and at least that
// often while it is used, so Redis's record (and the sweeper's deadline)
// follows it.
func TestCachedSessionWritesLastSeen(t *testing.T) {
	const idle = 2 * time.Second // a write at most every 200ms
	w := newCacheWorldIdle(t, idle)
	b := w.inst[1]
	cookie, _ := w.openIdle(t, idle)
	for range 10 {
		if code := check(b.h, cookie); code != 200 {
			t.Fatalf("check: %d", code)
		}
	}
	if n := b.st.touches.Load(); n != 1 {
		t.Fatalf("10 checks at once made %d Redis round trips, want 1", n)
	}
	time.Sleep(idle/10 + 50*time.Millisecond)
	check(b.h, cookie)
	if n := b.st.touches.Load(); n != 2 {
		t.Errorf("a check after idle/10 made %d round trips in all, want 2 (last-seen written)", n)
	}
	// Used every 300ms for 3 s, longer than the idle timeout: still live.
	for range 10 {
		time.Sleep(300 * time.Millisecond)
		if code := check(b.h, cookie); code != 200 {
			t.Fatalf("an active session lapsed: %d", code)
		}
	}
}

// TestCachedAnswerIsTheSame: the introspection answer served from memory
// (encoded once, when the session was cached) is byte for byte the one
// served after a Redis check, headers included.
func TestCachedAnswerIsTheSame(t *testing.T) {
	w := newCacheWorld(t)
	b := w.inst[1]
	cookie, sess := w.open(t)
	get := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/impersonation/session", nil)
		req.AddCookie(cookie)
		rec := httptest.NewRecorder()
		if err := b.h.Session(rec, req); err != nil || rec.Code != 200 {
			t.Fatalf("session: %d, %v", rec.Code, err)
		}
		return rec
	}
	fromRedis := get()
	fromMemory := get()
	if n := b.st.touches.Load(); n != 1 {
		t.Fatalf("two checks made %d Redis round trips, want 1 (the second from memory)", n)
	}
	if got, want := fromMemory.Body.String(), fromRedis.Body.String(); got != want {
		t.Errorf("from memory:\n%s\nfrom Redis:\n%s", got, want)
	}
	if !strings.Contains(fromRedis.Body.String(), `"session_id":"`+sess.ID+`"`) || !strings.HasSuffix(fromRedis.Body.String(), "}\n") {
		t.Errorf("answer = %s", fromRedis.Body)
	}
	if diff := cmp.Diff(fromRedis.Header(), fromMemory.Header()); diff != "" {
		t.Errorf("headers (-Redis +memory):\n%s", diff)
	}
}
