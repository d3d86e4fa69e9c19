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
	// Scope is the impersonation's access ("read" or "full"); empty in
	// sessions opened before scopes: full.
	Scope     string    `json:"scope,omitempty"`
	TokenID   string    `json:"token_id"`
	StartedAt time.Time `json:"started_at"`
	ExpiresAt time.Time `json:"expires_at"` // the absolute cap, never extended
	IP        string    `json:"ip,omitempty"`
}

// Lapse says why a session ended by itself.
type Lapse string

// The ways a session lapses.
const (
	LapseIdle   Lapse = "idle"   // unseen for longer than the idle timeout
	LapseCap    Lapse = "cap"    // reached its absolute cap
	LapseUnused Lapse = "unused" // never presented after its redemption
)

// luaLapsed is prepended to the scripts that judge a record: lapsed(h, now)
// takes HMGET rec seen cap idle unused and returns the lapse, or nil.
const luaLapsed = `
local function lapsed(h, now)
  local seen, cap, idle, unused = tonumber(h[2]), tonumber(h[3]), tonumber(h[4]), tonumber(h[5]) or 0
  if now >= cap then return 'cap' end
  if now - seen >= idle then return 'idle' end
  if unused > 0 and now >= unused then return 'unused' end
  return nil
end
`

// touchScript: KEYS[1] session key, KEYS[2] deadlines; ARGV[1] now (ms),
// ARGV[2] grace (ms), ARGV[3] session id.
// {OK, record} marks the session seen (and used) now; {LAPSED, record,
// lapse} leaves a lapsed record for End to end with its event; {NONE, ”}.
var touchScript = lua(luaLapsed + `
local h = redis.call('HMGET', KEYS[1], $FIELD_RECORD, $FIELD_SEEN, $FIELD_CAP, $FIELD_IDLE, $FIELD_UNUSED)
if not h[1] then return {$CODE_NONE, ''} end
local now = tonumber(ARGV[1])
local why = lapsed(h, now)
if why then return {$CODE_LAPSED, h[1], why} end
redis.call('HSET', KEYS[1], $FIELD_SEEN, ARGV[1], $FIELD_UNUSED, '0')
local d = math.min(now + tonumber(h[4]), tonumber(h[3]))
redis.call('ZADD', KEYS[2], d, ARGV[3])
redis.call('PEXPIRE', KEYS[1], d - now + math.max(tonumber(h[4]), tonumber(ARGV[2])))
return {$CODE_OK, h[1]}
`)

// Touch is the hot path of every request of an impersonated session: one
// round trip that checks the session is live (within its idle timeout, its
// cap and its "never used" deadline) and marks it seen. A lapsed session is
// returned with ErrNoSession and its lapse: the caller ends it with
// EndLapsed, which records the end in the same step.
func (s *Store) Touch(ctx context.Context, sid string) (Session, Lapse, error) {
	res, err := touchScript.Run(ctx, s.scripts, []string{s.key(keySession, sid), s.k.deadlines},
		ms(s.now()), time.Minute.Milliseconds(), sid).Slice()
	if err != nil {
		return Session{}, "", fmt.Errorf("store: touch session: %w", err)
	}
	code, rec, err := pair(res[:2], nil)
	if err != nil {
		return Session{}, "", err
	}
	if code == codeNone {
		return Session{}, "", ErrNoSession
	}
	var sess Session
	if err := json.Unmarshal([]byte(rec), &sess); err != nil {
		return Session{}, "", fmt.Errorf("store: session %s: %w", sid, err)
	}
	if code == codeLapsed {
		why, _ := res[2].(string)
		return sess, Lapse(why), ErrNoSession
	}
	return sess, "", nil
}

// GetSession returns a live session without touching it. A lapsed one is
// ErrNoSession.
func (s *Store) GetSession(ctx context.Context, sid string) (Session, error) {
	h, err := s.rdb.HMGet(ctx, s.key(keySession, sid), fieldRecord, fieldSeen, fieldCap, fieldIdle, fieldUnused).Result()
	if err != nil {
		return Session{}, fmt.Errorf("store: get session: %w", err)
	}
	sess, ok, err := s.liveRecord(h)
	if err != nil {
		return Session{}, fmt.Errorf("store: session %s: %w", sid, err)
	}
	if !ok {
		return Session{}, ErrNoSession
	}
	return sess, nil
}

// liveRecord decodes an HMGET of a session and reports whether it is live
// by the store's clock.
func (s *Store) liveRecord(h []any) (Session, bool, error) {
	rec, _ := h[0].(string)
	if rec == "" {
		return Session{}, false, nil
	}
	n := func(i int) int64 { v, _ := h[i].(string); x, _ := strconv.ParseInt(v, 10, 64); return x }
	now := ms(s.now())
	seen, capAt, idle, unused := n(1), n(2), n(3), n(4)
	if now >= capAt || now-seen >= idle || (unused > 0 && now >= unused) {
		return Session{}, false, nil
	}
	var sess Session
	if err := json.Unmarshal([]byte(rec), &sess); err != nil {
		return Session{}, false, err
	}
	return sess, true, nil
}

// endScript: KEYS[1] audit stream, KEYS[2] session key, KEYS[3] session
// index, KEYS[4] admin's index, KEYS[5] deadlines, KEYS[6] the subject's
// index, KEYS[7] the session-ends channel (published to: every instance
// drops the session); ARGV[1] session id,
// ARGV[2] now (ms), ARGV[3] mode ("any": logout and revocation end a live
// session; "lapsed": only a lapsed one), ARGV[4..5] the event for "any",
// ARGV[6..11] the events for an idle, cap and unused lapse.
// Removes the record and every index entry, and appends the event, in one
// step. A lapsed session is never ended as "any": it ended by itself, and
// records that instead.
var endScript = lua(luaEmit + luaLapsed + `
local h = redis.call('HMGET', KEYS[2], $FIELD_RECORD, $FIELD_SEEN, $FIELD_CAP, $FIELD_IDLE, $FIELD_UNUSED)
if not h[1] then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
  return {$CODE_NONE, ''}
end
local why = lapsed(h, tonumber(ARGV[2]))
local ev, idx
if why == 'idle' then ev, idx = ARGV[6], ARGV[7]
elseif why == 'cap' then ev, idx = ARGV[8], ARGV[9]
elseif why == 'unused' then ev, idx = ARGV[10], ARGV[11]
elseif ARGV[3] == 'any' then ev, idx = ARGV[4], ARGV[5]
else return {$CODE_NONE, ''} end
if ev == '' then return {$CODE_NONE, ''} end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
local id = emit(ev, idx)
redis.call('PUBLISH', KEYS[7], ARGV[1])
if why then return {$CODE_LAPSED, why} end
return {$CODE_OK, id}
`)

// LapseEvents are the session.ended events of each lapse.
type LapseEvents struct {
	Idle, Cap, Unused audit.Encoded
}

// End ends a live session with ev (logout: session.ended; revocation:
// session.revoked): the record, its index entries and the event go in one
// step. A session found lapsed meanwhile is ended with its lapse event
// instead, and End reports ErrNoSession, as for a session already gone.
func (s *Store) End(ctx context.Context, sess Session, ev audit.Encoded, lapses LapseEvents) error {
	return s.end(ctx, sess, "any", ev, lapses)
}

// EndLapsed ends a session that lapsed, with the event of its lapse, in one
// step. It reports ErrNoSession when the session is gone or not lapsed
// (someone saw it meanwhile): then nothing is appended.
func (s *Store) EndLapsed(ctx context.Context, sess Session, lapses LapseEvents) (Lapse, error) {
	return s.endLapse(ctx, sess, lapses)
}

func (s *Store) endLapse(ctx context.Context, sess Session, lapses LapseEvents) (Lapse, error) {
	res, err := s.endRun(ctx, sess, "lapsed", audit.Encoded{}, lapses)
	if err != nil {
		return "", err
	}
	code, why, _ := pair(res, nil)
	if code != codeLapsed {
		return "", ErrNoSession
	}
	return Lapse(why), nil
}

func (s *Store) end(ctx context.Context, sess Session, mode string, ev audit.Encoded, lapses LapseEvents) error {
	res, err := s.endRun(ctx, sess, mode, ev, lapses)
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return err
	}
	code, _, _ := pair(res, nil)
	if code != codeOK {
		return ErrNoSession
	}
	return err
}

func (s *Store) endRun(ctx context.Context, sess Session, mode string, ev audit.Encoded, l LapseEvents) ([]any, error) {
	args := []any{sess.ID, ms(s.now()), mode}
	for _, e := range []audit.Encoded{ev, l.Idle, l.Cap, l.Unused} {
		args = append(args, eventArgs(e)...)
	}
	res, err := s.run(ctx, endScript, []string{s.k.audit, s.key(keySession, sess.ID), s.k.sessions,
		s.key(keyAdminSessions, sess.Actor.ID), s.k.deadlines, s.subjectSessions(sess.Subject), s.k.ends}, args...)
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return nil, fmt.Errorf("store: end session: %w", err)
	}
	return res, err
}

// subjectSessions is the key of subj's session index.
func (s *Store) subjectSessions(subj audit.Subject) string {
	return s.key(keySubjectSess, subjectPart(subj.Collection, subj.ID))
}

// Sessions lists the live sessions (those of one admin when adminID is not
// empty), soonest cap first.
func (s *Store) Sessions(ctx context.Context, adminID string) ([]Session, error) {
	index := s.k.sessions
	if adminID != "" {
		index = s.key(keyAdminSessions, adminID)
	}
	return s.sessionsOf(ctx, index)
}

// SubjectSessions lists the live sessions impersonating subj, soonest cap
// first. The per-subject index is kept by the scripts that open and end
// sessions.
func (s *Store) SubjectSessions(ctx context.Context, subj audit.Subject) ([]Session, error) {
	return s.sessionsOf(ctx, s.subjectSessions(subj))
}

func (s *Store) sessionsOf(ctx context.Context, index string) ([]Session, error) {
	ids, err := s.rdb.ZRange(ctx, index, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list sessions: %w", err)
	}
	out := []Session{}
	if len(ids) == 0 {
		return out, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, s.key(keySession, id), fieldRecord, fieldSeen, fieldCap, fieldIdle, fieldUnused)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("store: list sessions: %w", err)
	}
	for i, c := range cmds {
		sess, ok, err := s.liveRecord(c.Val())
		if err != nil {
			return nil, fmt.Errorf("store: session %s unreadable: %w", ids[i], err)
		}
		if ok {
			out = append(out, sess)
		}
	}
	return out, nil
}

// Due returns up to n session ids whose deadline has passed: lapsed
// sessions for the sweeper to end.
func (s *Store) Due(ctx context.Context, n int64) ([]string, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, s.k.deadlines, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(ms(s.now()), 10), Count: n,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("store: due sessions: %w", err)
	}
	return ids, nil
}

// SessionRecord returns a session's record whatever its state (live or
// lapsed), for the sweeper.
func (s *Store) SessionRecord(ctx context.Context, sid string) (Session, error) {
	rec, err := s.rdb.HGet(ctx, s.key(keySession, sid), fieldRecord).Result()
	if errors.Is(err, redis.Nil) {
		return Session{}, ErrNoSession
	}
	if err != nil {
		return Session{}, fmt.Errorf("store: session record: %w", err)
	}
	var sess Session
	if err := json.Unmarshal([]byte(rec), &sess); err != nil {
		return Session{}, fmt.Errorf("store: session %s: %w", sid, err)
	}
	return sess, nil
}

// Forget drops a due session id whose record is gone from the deadlines
// (the record outlived its grace with no sweeper running).
func (s *Store) Forget(ctx context.Context, sid string) error {
	_, err := s.endRun(ctx, Session{ID: sid}, "lapsed", audit.Encoded{}, LapseEvents{})
	return err
}

// leaseScript: KEYS[1] lease; ARGV[1] owner, ARGV[2] TTL (ms).
var leaseScript = lua(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {$CODE_OK, ''}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {$CODE_OK, ''} end
return {$CODE_RACE, ''}
`)

// SweepLease reports whether owner holds (or now takes) the sweeper lease
// for ttl: one instance at a time sweeps lapsed sessions.
func (s *Store) SweepLease(ctx context.Context, owner string, ttl time.Duration) (bool, error) {
	code, _, err := pair(leaseScript.Run(ctx, s.rdb, []string{s.key(keySweepLease)}, owner, ttl.Milliseconds()).Slice())
	if err != nil {
		return false, fmt.Errorf("store: sweep lease: %w", err)
	}
	return code == codeOK, nil
}

// SessionEnds is a subscription to the ids of sessions that end, on every
// instance: logout, revocation, lapse, supersession.
type SessionEnds struct {
	ps *redis.PubSub
}

// SubscribeEnds subscribes to the ids of the sessions that end.
func (s *Store) SubscribeEnds(ctx context.Context) *SessionEnds {
	return &SessionEnds{ps: s.rdb.Subscribe(ctx, s.k.ends)}
}

// Close ends the subscription.
func (e *SessionEnds) Close() error { return e.ps.Close() }

// EndsEvent is what Receive returns: an ended session's id, or a change of
// the subscription's state.
type EndsEvent struct {
	SID        string // an ended session
	Subscribed bool   // the subscription is (again) in place: messages from now on arrive
	Down       error  // the subscription broke: messages may be lost until Subscribed
}

// Receive waits up to timeout for the next event. A timeout with nothing
// received is checked with a PING on the subscription's connection, so a
// silently dead connection shows as Down.
func (e *SessionEnds) Receive(ctx context.Context, timeout time.Duration) EndsEvent {
	msg, err := e.ps.ReceiveTimeout(ctx, timeout)
	if err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			if perr := e.ps.Ping(ctx); perr != nil {
				return EndsEvent{Down: perr}
			}
			return EndsEvent{}
		}
		return EndsEvent{Down: err}
	}
	switch m := msg.(type) {
	case *redis.Subscription:
		return EndsEvent{Subscribed: m.Kind == "subscribe"}
	case *redis.Message:
		return EndsEvent{SID: m.Payload}
	}
	return EndsEvent{}
}
