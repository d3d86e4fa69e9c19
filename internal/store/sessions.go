package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
)

// Session is the server-side record of an impersonation session. The
// cookie's JWT names it by ID; logout, idle timeout and revocation act on
// this record, so they take effect at once on every instance.
type Session struct {
	ID        string        `json:"id"`
	Actor     audit.Actor   `json:"actor"`
	Requester *audit.Actor  `json:"requester,omitempty"`
	Subject   audit.Subject `json:"subject"`
	Reason    string        `json:"reason,omitempty"`
	TokenID   string        `json:"token_id"`
	StartedAt time.Time     `json:"started_at"`
	ExpiresAt time.Time     `json:"expires_at"` // the absolute cap, never extended
	IP        string        `json:"ip,omitempty"`
}

// ErrNoSession: the session does not exist (never did, ended, revoked,
// idle or past its cap).
var ErrNoSession = errors.New("store: no such session")

func (s *Store) sessionKey(sid string) string        { return s.Key("session", sid) }
func (s *Store) sessionIndex() string                { return s.Key("sessions") }
func (s *Store) adminSessions(adminID string) string { return s.Key("admin-sessions", adminID) }

func ms(t time.Time) int64 { return t.UnixMilli() }

// redeemScript: KEYS[1] token key, KEYS[2] audit stream, KEYS[3] session
// key, KEYS[4] session index, KEYS[5] the admin's session index;
// ARGV[1] session JSON, ARGV[2] now (ms), ARGV[3] cap (ms), ARGV[4] idle
// TTL (ms), ARGV[5] session id, ARGV[6] redeemed event, ARGV[7] event when
// unknown, ARGV[8] event when already consumed.
// Consumes the token id, creates the session and audits, in one step.
var redeemScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[7])
  return {3, ''}
end
if string.sub(v, 1, 1) == 'x' then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[8])
  return {4, ''}
end
redis.call('SET', KEYS[1], 'x' .. v, 'KEEPTTL')
redis.call('HSET', KEYS[3], 'rec', ARGV[1], 'seen', ARGV[2], 'cap', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[5])
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[6])
return {1, id}
`)

// Redeem consumes the token id jti exactly once and, in the same atomic
// step, creates sess and appends redeemed. When jti is unknown or expired,
// or already consumed, nothing is created and rejected(state) is appended.
// idle is the idle timeout: the record lapses after that long unseen.
func (s *Store) Redeem(ctx context.Context, jti string, sess Session, idle time.Duration, redeemed audit.Event, rejected func(State) audit.Event) (bool, State, error) {
	rec, err := json.Marshal(sess)
	if err != nil {
		return false, Unknown, err
	}
	events, err := s.encodeOutcomes(redeemed, rejected)
	if err != nil {
		return false, Unknown, err
	}
	args := append([]any{string(rec), ms(s.now()), ms(sess.ExpiresAt), ttlMillis(s.now(), sess.ExpiresAt, idle), sess.ID}, events...)
	code, _, err := runPair(ctx, redeemScript, s.rdb, []string{s.tokenKey(jti), s.AuditStream(),
		s.sessionKey(sess.ID), s.sessionIndex(), s.adminSessions(sess.Actor.ID)}, args...)
	if err != nil {
		return false, Unknown, fmt.Errorf("store: redeem: %w", err)
	}
	ok, st := outcome(code)
	return ok, st, nil
}

// ttlMillis is how long Redis keeps an untouched session: the idle timeout,
// or less when the cap comes first (at least 1 ms).
func ttlMillis(now, capAt time.Time, idle time.Duration) int64 {
	d := min(idle, capAt.Sub(now))
	return max(d.Milliseconds(), 1)
}

// touchScript: KEYS[1] session key; ARGV[1] now (ms), ARGV[2] idle (ms).
// Returns {1, record} and marks the session seen now, or {2, record} when
// this call found it idle or past its cap and removed it, or {0, ”}.
var touchScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'rec', 'seen', 'cap')
if not r[1] then return {0, ''} end
local now, idle = tonumber(ARGV[1]), tonumber(ARGV[2])
local seen, cap = tonumber(r[2]), tonumber(r[3])
if now >= cap or now - seen > idle then
  if redis.call('DEL', KEYS[1]) == 1 then return {2, r[1]} end
  return {0, ''}
end
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
local ttl = math.min(idle, cap - now)
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, r[1]}
`)

// Touch is the hot path of every request of an impersonated session: one
// round trip that checks the session is live, within its idle timeout and
// its cap, and marks it seen. lapsed reports that this call found the
// session idle or past its cap and removed it (the caller audits that, once).
func (s *Store) Touch(ctx context.Context, sid string, idle time.Duration) (sess Session, lapsed bool, err error) {
	code, rec, err := runPair(ctx, touchScript, s.rdb, []string{s.sessionKey(sid)}, ms(s.now()), idle.Milliseconds())
	if err != nil {
		return Session{}, false, fmt.Errorf("store: touch session: %w", err)
	}
	if code == 0 {
		return Session{}, false, ErrNoSession
	}
	if err := json.Unmarshal([]byte(rec), &sess); err != nil {
		return Session{}, false, fmt.Errorf("store: session %s: %w", sid, err)
	}
	if code == 2 {
		return sess, true, ErrNoSession
	}
	return sess, false, nil
}

// GetSession returns a session without touching it.
func (s *Store) GetSession(ctx context.Context, sid string) (Session, error) {
	rec, err := s.rdb.HGet(ctx, s.sessionKey(sid), "rec").Result()
	if errors.Is(err, redis.Nil) {
		return Session{}, ErrNoSession
	}
	if err != nil {
		return Session{}, fmt.Errorf("store: get session: %w", err)
	}
	var sess Session
	if err := json.Unmarshal([]byte(rec), &sess); err != nil {
		return Session{}, fmt.Errorf("store: session %s: %w", sid, err)
	}
	return sess, nil
}

// endScript: KEYS[1] session key, KEYS[2] session index, KEYS[3] admin's
// index, KEYS[4] audit stream; ARGV[1] session id, ARGV[2] event.
var endScript = redis.NewScript(`
if redis.call('DEL', KEYS[1]) == 0 then return {0, ''} end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local id = redis.call('XADD', KEYS[4], '*', 'e', ARGV[2])
return {1, id}
`)

// EndSession removes sess and appends ev (session.ended or
// session.revoked) in one step. It reports ErrNoSession when the session
// was already gone; then nothing is appended.
func (s *Store) EndSession(ctx context.Context, sess Session, ev audit.Event) error {
	js, err := s.encodeEvent(&ev)
	if err != nil {
		return err
	}
	code, _, err := runPair(ctx, endScript, s.rdb, []string{s.sessionKey(sess.ID), s.sessionIndex(),
		s.adminSessions(sess.Actor.ID), s.AuditStream()}, sess.ID, js)
	if err != nil {
		return fmt.Errorf("store: end session: %w", err)
	}
	if code == 0 {
		return ErrNoSession
	}
	return nil
}

// Sessions lists the live sessions (those of one admin when adminID is not
// empty), soonest cap first. Records that lapsed are dropped from the
// indexes on the way.
func (s *Store) Sessions(ctx context.Context, adminID string) ([]Session, error) {
	index := s.sessionIndex()
	if adminID != "" {
		index = s.adminSessions(adminID)
	}
	now := strconv.FormatInt(ms(s.now()), 10)
	if err := s.rdb.ZRemRangeByScore(ctx, index, "-inf", "("+now).Err(); err != nil {
		return nil, fmt.Errorf("store: list sessions: %w", err)
	}
	ids, err := s.rdb.ZRange(ctx, index, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list sessions: %w", err)
	}
	if len(ids) == 0 {
		return []Session{}, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(ctx, s.sessionKey(id), "rec")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("store: list sessions: %w", err)
	}
	out := make([]Session, 0, len(ids))
	var gone []any
	for i, c := range cmds {
		rec, err := c.Result()
		if errors.Is(err, redis.Nil) {
			gone = append(gone, ids[i]) // lapsed (idle): the key expired
			continue
		}
		var sess Session
		if err != nil || json.Unmarshal([]byte(rec), &sess) != nil {
			return nil, fmt.Errorf("store: session %s unreadable", ids[i])
		}
		out = append(out, sess)
	}
	if len(gone) > 0 {
		s.rdb.ZRem(ctx, index, gone...) // best effort: a stale index entry is harmless
	}
	return out, nil
}
