package session

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/impersonator/impersonator/internal/store"
)

// Cache keeps this instance's live sessions in memory, so the session check
// (forward-auth, every request of the customer app) needs no Redis round
// trip, while revocation stays immediate: every end, revocation and logout
// is published by the script that makes it, and every instance drops the
// session on receipt.
//
// It fails closed: an entry is served from memory only while the
// subscription has been up without a break since the entry was cached (each
// (re)subscription starts a new epoch, and entries of an older epoch are
// checked against Redis again). While the subscription is down or
// reconnecting, every request checks Redis, as without a cache.
//
// Idle tracking: a cached session's last-seen time is written to Redis at
// most every Idle/10, so the idle timeout may end a session up to 10% later
// than its last request plus the idle timeout.
type Cache struct {
	// Idle is the sessions' idle timeout.
	Idle time.Duration
	// Max bounds the entries; when full, the cache is emptied (a rare,
	// cheap reset).
	Max int

	mu    sync.Mutex
	up    bool   // the subscription is in place
	epoch uint64 // bumped at every (re)subscription and break
	m     map[string]*cached
	// seq counts drops; dropped holds the seq of each recent drop, so a
	// check that began before a session's end cannot cache it after.
	seq     uint64
	dropped map[string]uint64
}

type cached struct {
	sess    store.Session
	answer  []byte // sess's introspection answer, encoded once
	epoch   uint64
	seen    time.Time // last request, on this instance
	written time.Time // last seen time written to Redis
}

// NewCache returns an empty cache for sessions with the idle timeout idle.
func NewCache(idle time.Duration) *Cache {
	return &Cache{Idle: idle, Max: 100000, m: map[string]*cached{}, dropped: map[string]uint64{}}
}

// Subscriber is the store's subscription to ended sessions.
type Subscriber interface {
	SubscribeEnds(ctx context.Context) *store.SessionEnds
}

// Run keeps the subscription until ctx ends, dropping each ended session
// as its id arrives. It logs breaks and returns when ctx ends.
func (c *Cache) Run(ctx context.Context, st Subscriber, log *slog.Logger) {
	for ctx.Err() == nil {
		sub := st.SubscribeEnds(ctx)
		// A blocked read does not watch ctx: closing the subscription ends it.
		stop := context.AfterFunc(ctx, func() { sub.Close() })
		for ctx.Err() == nil {
			ev := sub.Receive(ctx, 5*time.Second)
			switch {
			case ev.Down != nil:
				c.setUp(false)
				if ctx.Err() == nil {
					log.Warn("session-ends subscription broke: checking every session in Redis until it is back", "error", ev.Down)
				}
			case ev.Subscribed:
				c.setUp(true)
			case ev.SID != "":
				c.Drop(ev.SID)
			}
			if ev.Down != nil {
				break
			}
		}
		stop()
		sub.Close()
		c.setUp(false)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cache) setUp(up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up != up || up {
		c.epoch++
	}
	c.up = up
	if !up {
		clear(c.m)
	}
	clear(c.dropped) // a new epoch: nothing older can be cached
}

// Subscribed reports whether the subscription is in place now.
func (c *Cache) Subscribed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// Drop forgets the session sid (it ended).
func (c *Cache) Drop(sid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, sid)
	c.seq++
	if len(c.dropped) >= c.Max {
		clear(c.dropped)
		c.epoch++ // checks under way may have missed a forgotten drop
	}
	c.dropped[sid] = c.seq
}

// get returns the cached session sid if it can be served from memory at
// now: subscribed since it was cached, within its cap and idle timeout;
// write reports that its last-seen time is due in Redis.
func (c *Cache) get(sid string, now time.Time) (sess store.Session, answer []byte, write, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.m[sid]
	if !found || !c.up || e.epoch != c.epoch || !now.Before(e.sess.ExpiresAt) || now.Sub(e.seen) >= c.Idle {
		return store.Session{}, nil, false, false
	}
	e.seen = now
	return e.sess, e.answer, now.Sub(e.written) >= c.Idle/10, true
}

// put caches sess, with its encoded answer (nil: encoded per request), as
// checked in Redis at now, by a check that began at mark. It caches nothing
// while the subscription is down, if it broke since the check began, or if
// the session ended since.
func (c *Cache) put(sess store.Session, answer []byte, now time.Time, mark checkMark) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.up || mark.epoch != c.epoch || c.dropped[sess.ID] > mark.seq {
		return
	}
	if len(c.m) >= c.Max {
		clear(c.m)
	}
	c.m[sess.ID] = &cached{sess: sess, answer: answer, epoch: mark.epoch, seen: now, written: now}
}

// checkMark is when a Redis check began: its epoch and drop count.
type checkMark struct{ epoch, seq uint64 }

func (c *Cache) mark() checkMark {
	c.mu.Lock()
	defer c.mu.Unlock()
	return checkMark{c.epoch, c.seq}
}
