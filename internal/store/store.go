package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
)

// DefaultPrefix is the prefix of every key. Its braces are a Redis Cluster
// hash tag: all keys of the service live in one slot, so the multi-key
// scripts below stay valid on a cluster.
const DefaultPrefix = "{impersonator}"

// Errors of the store. Any other error means Redis failed, and callers fail
// closed.
var (
	// ErrDuplicate: a token id was reserved twice (a random-number failure).
	ErrDuplicate = errors.New("store: token id already reserved")
)

// Store is the Redis-backed store. It is safe for concurrent use, and any
// number of Store values (in one process or many) may share one Redis.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	now    func() time.Time
}

// Options configure a Store.
type Options struct {
	// Prefix of every key; it must contain a {hash tag}. Default
	// DefaultPrefix. Tests use their own prefixes to share one server.
	Prefix string
	// Now is the clock used to stamp audit events. Default time.Now.
	Now func() time.Time
}

// New returns a store on rdb.
func New(rdb redis.UniversalClient, o Options) *Store {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if !strings.Contains(o.Prefix, "{") || !strings.Contains(o.Prefix, "}") {
		panic("store: prefix must contain a {hash tag}")
	}
	return &Store{rdb: rdb, prefix: o.Prefix, now: o.Now}
}

// Client returns the underlying Redis client.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Key returns the full name of one of the service's keys: prefix:parts...
func (s *Store) Key(parts ...string) string {
	return s.prefix + ":" + strings.Join(parts, ":")
}

func (s *Store) tokenKey(jti string) string { return s.Key("jti", jti) }

// AuditStream is the name of the audit stream.
func (s *Store) AuditStream() string { return s.Key("audit") }

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Grant is what a minted token allows, kept server-side under its jti until
// it is redeemed or expires: everything the later audit events and the
// session need that the token itself does not carry.
type Grant struct {
	Actor     audit.Actor   `json:"actor"`
	Requester *audit.Actor  `json:"requester,omitempty"`
	Subject   audit.Subject `json:"subject"`
	Reason    string        `json:"reason,omitempty"`
	ExpiresAt time.Time     `json:"expires_at"`
}

// encodeEvent stamps ev with the store's clock and returns its JSON.
func (s *Store) encodeEvent(ev *audit.Event) (string, error) {
	ev.Stamp(s.now())
	b, err := ev.Marshal()
	return string(b), err
}

// Script results are (code, payload) pairs.
const (
	codeOK        = 1
	codeDuplicate = 2
	codeUnknown   = 3
	codeConsumed  = 4
	codeRate      = 3 // reserve only: the rate refused
)

// consumedMark prefixes the grant of a redeemed token id: it is kept until
// the token would have expired, so a replay is told from an unknown id.
const consumedMark = "x"

// reserveScript: KEYS[1] token key, KEYS[2] audit stream, KEYS[3] rate
// counter; ARGV[1] grant JSON, ARGV[2] TTL in ms, ARGV[3] minted event,
// ARGV[4] rate limit (0: none), ARGV[5] rate window in ms, ARGV[6] event
// appended when the rate refuses.
// The rate is counted, the event appended and the token id reserved in one
// atomic step: one round trip for the whole mint.
var reserveScript = redis.NewScript(`
local limit = tonumber(ARGV[4])
if limit > 0 then
  local n = redis.call('INCR', KEYS[3])
  local ttl = redis.call('PTTL', KEYS[3])
  if n == 1 or ttl < 0 then
    redis.call('PEXPIRE', KEYS[3], ARGV[5])
    ttl = tonumber(ARGV[5])
  end
  if n > limit then
    redis.call('XADD', KEYS[2], '*', 'e', ARGV[6])
    return {3, tostring(ttl)}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {2, ''}
end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, id}
`)

// Reserve stores jti as a single-use token id holding grant until ttl
// passes, and appends ev (normally impersonation.minted) in the same atomic
// step: the token id is never stored without its audit event, nor the event
// without the id. It returns the audit stream id of ev.
func (s *Store) Reserve(ctx context.Context, jti string, g Grant, ttl time.Duration, ev audit.Event) (string, error) {
	return s.ReserveLimited(ctx, jti, g, ttl, ev, nil)
}

// Limit is a rate counted in the same step as a reservation.
type Limit struct {
	N      int
	Window time.Duration
	Key    []string    // the counter's name parts, as for Allow
	Denied audit.Event // appended instead of the minted event when over
}

// RateError is returned by ReserveLimited when the limit refuses; the
// Denied event was appended and nothing was reserved.
type RateError struct{ RetryAfter time.Duration }

func (e *RateError) Error() string {
	return fmt.Sprintf("store: rate limit reached, retry in %s", e.RetryAfter)
}

// ReserveLimited is Reserve with a rate counted in the same atomic step
// (nil: no limit).
func (s *Store) ReserveLimited(ctx context.Context, jti string, g Grant, ttl time.Duration, ev audit.Event, l *Limit) (string, error) {
	if jti == "" || ttl <= 0 {
		return "", fmt.Errorf("store: reserve needs a token id and a positive TTL")
	}
	grant, err := json.Marshal(g)
	if err != nil {
		return "", err
	}
	event, err := s.encodeEvent(&ev)
	if err != nil {
		return "", err
	}
	rateKey, limit, window, denied := s.tokenKey(jti), 0, int64(0), ""
	if l != nil && l.N > 0 {
		if denied, err = s.encodeEvent(&l.Denied); err != nil {
			return "", err
		}
		rateKey, limit, window = s.Key(l.Key...), l.N, l.Window.Milliseconds()
	}
	code, payload, err := runPair(ctx, reserveScript, s.rdb,
		[]string{s.tokenKey(jti), s.AuditStream(), rateKey}, string(grant), ttl.Milliseconds(), event, limit, window, denied)
	if err != nil {
		return "", fmt.Errorf("store: reserve: %w", err)
	}
	switch code {
	case codeDuplicate:
		return "", ErrDuplicate
	case codeRate:
		ms, _ := strconv.ParseInt(payload, 10, 64)
		return "", &RateError{RetryAfter: time.Duration(ms) * time.Millisecond}
	}
	return payload, nil
}

// State is where a token id stands.
type State int

// States of a token id.
const (
	Unknown  State = iota // never reserved, or expired
	Live                  // reserved and not yet redeemed
	Consumed              // redeemed; kept until it would have expired
)

func (st State) String() string {
	switch st {
	case Live:
		return "live"
	case Consumed:
		return "consumed"
	}
	return "unknown"
}

// Lookup returns the grant of jti and its state, without changing anything.
func (s *Store) Lookup(ctx context.Context, jti string) (Grant, State, error) {
	v, err := s.rdb.Get(ctx, s.tokenKey(jti)).Result()
	if errors.Is(err, redis.Nil) {
		return Grant{}, Unknown, nil
	}
	if err != nil {
		return Grant{}, Unknown, fmt.Errorf("store: lookup: %w", err)
	}
	st := Live
	if strings.HasPrefix(v, consumedMark) {
		st, v = Consumed, strings.TrimPrefix(v, consumedMark)
	}
	var g Grant
	if err := json.Unmarshal([]byte(v), &g); err != nil {
		return Grant{}, Unknown, fmt.Errorf("store: grant of %s: %w", jti, err)
	}
	return g, st, nil
}

// consumeScript: KEYS[1] token key, KEYS[2] audit stream;
// ARGV[1] event appended on success, ARGV[2] event appended when the id is
// unknown or expired, ARGV[3] event appended when it was already consumed.
// Marks the token id consumed (keeping its TTL) exactly once.
var consumeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
  return {3, ''}
end
if string.sub(v, 1, 1) == 'x' then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
  return {4, ''}
end
redis.call('SET', KEYS[1], 'x' .. v, 'KEEPTTL')
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])
return {1, id}
`)

// Consume redeems jti exactly once, across every instance sharing this
// Redis. On success it appends ok and reports true. When jti is unknown or
// expired, or already consumed, it appends rejected(state) and reports false
// with that state. Either way the event is written in the same atomic step
// as the decision, so no redemption and no replay goes unaudited.
func (s *Store) Consume(ctx context.Context, jti string, ok audit.Event, rejected func(State) audit.Event) (bool, State, error) {
	events, err := s.encodeOutcomes(ok, rejected)
	if err != nil {
		return false, Unknown, err
	}
	code, _, err := runPair(ctx, consumeScript, s.rdb,
		[]string{s.tokenKey(jti), s.AuditStream()}, events...)
	if err != nil {
		return false, Unknown, fmt.Errorf("store: consume: %w", err)
	}
	ok2, st := outcome(code)
	return ok2, st, nil
}

// encodeOutcomes encodes the three events a consumption may append: on
// success, for an unknown id, for a consumed one.
func (s *Store) encodeOutcomes(ok audit.Event, rejected func(State) audit.Event) ([]any, error) {
	out := make([]any, 0, 3)
	for _, ev := range []audit.Event{ok, rejected(Unknown), rejected(Consumed)} {
		js, err := s.encodeEvent(&ev)
		if err != nil {
			return nil, err
		}
		out = append(out, js)
	}
	return out, nil
}

// outcome maps a consume or redeem script's code.
func outcome(code int64) (bool, State) {
	switch code {
	case codeOK:
		return true, Live
	case codeConsumed:
		return false, Consumed
	}
	return false, Unknown
}

// Append writes one audit event on its own (refusals, session ends). It
// returns the event's stream id.
func (s *Store) Append(ctx context.Context, ev audit.Event) (string, error) {
	event, err := s.encodeEvent(&ev)
	if err != nil {
		return "", err
	}
	id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.AuditStream(), Values: []string{"e", event}}).Result()
	if err != nil {
		return "", fmt.Errorf("store: append audit event: %w", err)
	}
	return id, nil
}

func redisScript(src string) *redis.Script { return redis.NewScript(src) }

func isNil(err error) bool { return errors.Is(err, redis.Nil) }

// runInts runs a script that answers {int, int}.
func runInts(ctx context.Context, sc *redis.Script, c redis.Scripter, keys []string, args ...any) (int64, int64, error) {
	res, err := sc.Run(ctx, c, keys, args...).Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("unexpected script answer %v", res)
	}
	return res[0], res[1], nil
}

// runPair runs a script that answers {code, payload}.
func runPair(ctx context.Context, sc *redis.Script, c redis.Scripter, keys []string, args ...any) (int64, string, error) {
	res, err := sc.Run(ctx, c, keys, args...).Slice()
	if err != nil {
		return 0, "", err
	}
	if len(res) != 2 {
		return 0, "", fmt.Errorf("unexpected script answer %v", res)
	}
	code, ok := res[0].(int64)
	if !ok {
		return 0, "", fmt.Errorf("unexpected script code %v", res[0])
	}
	payload, _ := res[1].(string)
	return code, payload, nil
}

// Entry is one audit event with its stream id.
type Entry struct {
	StreamID string
	Event    audit.Event
}

// Range reads audit events from start to end (stream ids, "-" and "+" for
// the ends), oldest first, at most count (0: all).
func (s *Store) Range(ctx context.Context, start, end string, count int64) ([]Entry, error) {
	var msgs []redis.XMessage
	var err error
	if count > 0 {
		msgs, err = s.rdb.XRangeN(ctx, s.AuditStream(), start, end, count).Result()
	} else {
		msgs, err = s.rdb.XRange(ctx, s.AuditStream(), start, end).Result()
	}
	if err != nil {
		return nil, fmt.Errorf("store: read audit stream: %w", err)
	}
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		e := Entry{StreamID: m.ID}
		raw, _ := m.Values["e"].(string)
		if err := json.Unmarshal([]byte(raw), &e.Event); err != nil {
			return nil, fmt.Errorf("store: audit entry %s: %w", m.ID, err)
		}
		out = append(out, e)
	}
	return out, nil
}
