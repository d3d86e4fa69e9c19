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

// Grant is what a minted token allows, kept server-side under its jti until
// it is redeemed or expires: everything the later audit events and the
// session need that the token itself does not carry.
type Grant struct {
	Actor     audit.Actor   `json:"actor"`
	Requester *audit.Actor  `json:"requester,omitempty"`
	Subject   audit.Subject `json:"subject"`
	Reason    string        `json:"reason,omitempty"`
	// Scope is the impersonation's access ("read" or "full"); empty in
	// grants minted before scopes: full.
	Scope     string    `json:"scope,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	// Auto delivery: the grant both credentials belong to, and which one
	// this is (CredentialWebhook or CredentialRedirect).
	GrantID    string `json:"grant,omitempty"`
	Credential string `json:"cred,omitempty"`
	PairJTI    string `json:"pair,omitempty"` // the other credential's token id
}

// Reservation is one mint: the token id, its grant and lifetime, its
// impersonation.minted event, and what is counted and checked with it.
type Reservation struct {
	JTI    string
	Grant  Grant
	TTL    time.Duration
	Minted audit.Encoded
	// Rate, when set, counts this mint against the admin's rate; over it,
	// Rate.Denied is appended instead and nothing is reserved.
	Rate *Limit
	// Approval, when set, marks a Forest approval request used; an approval
	// used before refuses the mint and appends Approval.Denied instead.
	Approval *ApprovalUse
	// Pair, when set, is a second credential of the same grant (auto
	// delivery), reserved in the same step.
	Pair *Pair
	// Consent, when set, requires the subject's active consent (a consent
	// record whose Redis TTL has not run out) in the same step; without
	// one, Consent.Denied is appended instead and nothing is reserved.
	Consent *ConsentCheck
}

// ConsentCheck is the consent a mint requires.
type ConsentCheck struct {
	Denied audit.Encoded
}

// Pair is the second credential of an auto-delivery grant.
type Pair struct {
	JTI   string
	Grant Grant
}

// Limit is a fixed-window rate counted in the same atomic step as the
// change it limits.
type Limit struct {
	N      int
	Window time.Duration
	Who    []string      // the counter's name parts, e.g. "mint", admin id
	Denied audit.Encoded // appended when the limit refuses; none when empty
}

// ApprovalUse marks one approval request used until it could no longer be
// replayed.
type ApprovalUse struct {
	ID     string // a digest of the approval request
	Until  time.Duration
	Denied audit.Encoded // appended when it was used before; none when empty
}

// RateError is returned when a rate limit refuses; its Denied event was
// appended and nothing else changed.
type RateError struct{ RetryAfter time.Duration }

func (e *RateError) Error() string {
	return fmt.Sprintf("store: rate limit reached, retry in %s", e.RetryAfter)
}

// ErrApprovalUsed: the approval request was used before. Its denied event
// was appended and nothing was reserved.
var ErrApprovalUsed = errors.New("store: approval request already used")

// ErrNoConsent: the mint required the subject's consent and it has none
// (never given, withdrawn or expired). Its denied event was appended and
// nothing was reserved.
var ErrNoConsent = errors.New("store: the subject has no active consent")

// reserveScript: KEYS[1] audit stream, KEYS[2] token key, KEYS[3] rate
// counter, KEYS[4] approval key, KEYS[5] the pair's token key; ARGV[1]
// grant JSON, ARGV[2] TTL (ms), ARGV[3..4] minted event, ARGV[5] rate limit
// (0: none), ARGV[6] rate window (ms), ARGV[7..8] event when the rate
// refuses, ARGV[9] approval TTL (ms, 0: none), ARGV[10..11] event when the
// approval was used, ARGV[12] the pair's grant JSON ("": no pair); KEYS[6]
// the subject's consent, KEYS[7] the subject's unredeemed tokens, ARGV[13]
// "1" when consent is required, ARGV[14..15] event when it is missing,
// ARGV[16] now (ms), ARGV[17] the token ids' expiry (ms), ARGV[18] the
// token id, ARGV[19] the pair's token id.
// The consent is checked, the rate counted, the approval used, the token id
// reserved and its event appended in one atomic step: one round trip for
// the whole mint. An expired consent is absent: its key's TTL is its until.
var reserveScript = lua(luaEmit + `
if ARGV[13] == '1' and redis.call('EXISTS', KEYS[6]) == 0 then
  emit(ARGV[14], ARGV[15])
  return {$CODE_CONSENT, ''}
end
local limit = tonumber(ARGV[5])
if limit > 0 then
  local n = redis.call('INCR', KEYS[3])
  local ttl = redis.call('PTTL', KEYS[3])
  if n == 1 or ttl < 0 then
    redis.call('PEXPIRE', KEYS[3], ARGV[6])
    ttl = tonumber(ARGV[6])
  end
  if n > limit then
    if ARGV[7] ~= '' then emit(ARGV[7], ARGV[8]) end
    return {$CODE_RATE, tostring(ttl)}
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 or (ARGV[12] ~= '' and redis.call('EXISTS', KEYS[5]) == 1) then
  return {$CODE_DUPLICATE, ''}
end
if tonumber(ARGV[9]) > 0 then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[9]) then
    if ARGV[10] ~= '' then emit(ARGV[10], ARGV[11]) end
    return {$CODE_APPROVAL, ''}
  end
end
local id = emit(ARGV[3], ARGV[4])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if ARGV[12] ~= '' then redis.call('SET', KEYS[5], ARGV[12], 'PX', ARGV[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. ARGV[16])
redis.call('ZADD', KEYS[7], ARGV[17], ARGV[18])
if ARGV[12] ~= '' then redis.call('ZADD', KEYS[7], ARGV[17], ARGV[19]) end
if redis.call('PTTL', KEYS[7]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[7], ARGV[2]) end
return {$CODE_OK, id}
`)

// Reserve stores r.JTI as a single-use token id holding its grant until the
// TTL passes, and appends r.Minted in the same atomic step: the token id is
// never stored without its audit event, nor the event without the id. It
// returns the audit stream id of the minted event.
func (s *Store) Reserve(ctx context.Context, r Reservation) (string, error) {
	if r.JTI == "" || r.TTL <= 0 {
		return "", errors.New("store: reserve needs a token id and a positive TTL")
	}
	grant, err := json.Marshal(r.Grant)
	if err != nil {
		return "", err
	}
	rateKey, limit, window, denied := s.k.noRate, 0, int64(0), audit.Encoded{}
	if l := r.Rate; l != nil && l.N > 0 {
		rateKey, limit, window, denied = s.key(append([]string{keyRate}, l.Who...)...), l.N, l.Window.Milliseconds(), l.Denied
	}
	approvalKey, approvalTTL, approvalDenied := s.k.noApproval, int64(0), audit.Encoded{}
	if a := r.Approval; a != nil {
		approvalKey, approvalTTL, approvalDenied = s.key(keyApproval, a.ID), max(a.Until.Milliseconds(), 1), a.Denied
	}
	pairKey, pairGrant, pairJTI := s.k.noToken, "", ""
	if p := r.Pair; p != nil {
		b, err := json.Marshal(p.Grant)
		if err != nil {
			return "", err
		}
		pairKey, pairGrant, pairJTI = s.key(keyToken, p.JTI), string(b), p.JTI
	}
	consentRequired, consentDenied := "", audit.Encoded{}
	if c := r.Consent; c != nil {
		consentRequired, consentDenied = "1", c.Denied
	}
	subj := subjectPart(r.Grant.Subject.Collection, r.Grant.Subject.ID)
	now := s.now()
	expiry := r.Grant.ExpiresAt
	if expiry.IsZero() {
		expiry = now.Add(r.TTL)
	}
	args := []any{string(grant), r.TTL.Milliseconds()}
	args = append(args, eventArgs(r.Minted)...)
	args = append(args, limit, window)
	args = append(args, eventArgs(denied)...)
	args = append(args, approvalTTL)
	args = append(args, eventArgs(approvalDenied)...)
	args = append(args, pairGrant, consentRequired)
	args = append(args, eventArgs(consentDenied)...)
	args = append(args, ms(now), ms(expiry), r.JTI, pairJTI)
	code, payload, err := pair(s.run(ctx, reserveScript,
		[]string{s.k.audit, s.key(keyToken, r.JTI), rateKey, approvalKey, pairKey,
			s.key(keyConsent, subj), s.key(keySubjectTokens, subj)}, args...))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return "", fmt.Errorf("store: reserve: %w", err)
	}
	switch code {
	case codeDuplicate:
		return "", ErrDuplicate
	case codeRate:
		ms, _ := strconv.ParseInt(payload, 10, 64)
		return "", &RateError{RetryAfter: time.Duration(ms) * time.Millisecond}
	case codeApproval:
		return "", ErrApprovalUsed
	case codeConsent:
		return "", ErrNoConsent
	}
	return payload, err
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
	v, err := s.rdb.Get(ctx, s.key(keyToken, jti)).Result()
	if errors.Is(err, redis.Nil) {
		return Grant{}, Unknown, nil
	}
	if err != nil {
		return Grant{}, Unknown, fmt.Errorf("store: lookup: %w", err)
	}
	st := Live
	if rest, ok := strings.CutPrefix(v, consumedMark); ok {
		st, v = Consumed, rest
	}
	var g Grant
	if err := json.Unmarshal([]byte(v), &g); err != nil {
		return Grant{}, Unknown, fmt.Errorf("store: grant of %s: %w", jti, err)
	}
	return g, st, nil
}

// Redemption is one login: the token id it consumes, the session it opens,
// and the events of each outcome.
type Redemption struct {
	JTI     string
	Session Session
	Idle    time.Duration // idle timeout
	// Unused, when positive, ends the session as "never used" if no
	// request presents it within this time of its start.
	Unused   time.Duration
	Redeemed audit.Encoded // on success
	Unknown  audit.Encoded // the id was never minted, or expired
	Consumed audit.Encoded // the id was redeemed before: a replay
	// Auto delivery: the grant's state as GrantSession saw it; the
	// redemption is refused with ErrGrantChanged if it changed since.
	Auto *AutoRedemption
}

// AutoRedemption is what redeeming one credential of an auto-delivery
// grant needs: the grant keeps at most one live session.
type AutoRedemption struct {
	Grant      Grant
	Seen       GrantSession  // the grant's session when the caller looked
	Superseded audit.Encoded // R: the event ending Seen's webhook session
	FirstParty audit.Encoded // W: the event refusing it, a first-party session exists
}

// GrantSession is the session an auto-delivery grant has opened so far.
type GrantSession struct {
	SID string // "" when none
	By  string // the credential that opened it
}

// ErrGrantChanged: the grant's session changed between the caller's look
// and its redemption (the other credential arrived meanwhile); look again.
var ErrGrantChanged = errors.New("store: the grant changed meanwhile")

// ErrFirstParty: a webhook credential arrived after its grant's session was
// opened first-party; it was consumed and its refusal appended.
var ErrFirstParty = errors.New("store: the grant's session was opened first-party already")

// redeemScript: KEYS[1] audit stream, KEYS[2] token key, KEYS[3] session
// key, KEYS[4] session index, KEYS[5] the admin's session index, KEYS[6]
// session deadlines, KEYS[7] grant, KEYS[9] the session-ends channel; ARGV[1] session JSON, ARGV[2] now (ms),
// ARGV[3] cap (ms), ARGV[4] idle (ms), ARGV[5] unused deadline (ms, 0:
// none), ARGV[6] record TTL (ms), ARGV[7] first deadline (ms), ARGV[8]
// session id, ARGV[9..10] redeemed event, ARGV[11..12] event when unknown,
// ARGV[13..14] event when already consumed; auto delivery: ARGV[15] the
// credential ("": not auto), ARGV[16..17] the grant's session and its
// credential as the caller saw them, ARGV[18] that session's key,
// ARGV[19..20] the event ending it (superseded), ARGV[21..22] the event
// refusing a webhook credential after a first-party session, ARGV[23] the
// grant's TTL (ms); KEYS[8] the subject's session index.
// Consumes the token id, creates the session and its index entries and
// audits, in one step; an auto-delivery grant keeps at most one live
// session.
var redeemScript = lua(luaEmit + `
local v = redis.call('GET', KEYS[2])
if not v then
  emit(ARGV[11], ARGV[12])
  return {$CODE_UNKNOWN, ''}
end
if string.sub(v, 1, 1) == $CONSUMED then
  emit(ARGV[13], ARGV[14])
  return {$CODE_CONSUMED, ''}
end
if ARGV[15] ~= '' then
  local g = redis.call('HMGET', KEYS[7], $FIELD_GRANT_SESSION, $FIELD_GRANT_BY)
  if (g[1] or '') ~= ARGV[16] or (g[2] or '') ~= ARGV[17] then return {$CODE_RACE, ''} end
  if ARGV[15] == $CRED_W and ARGV[17] == $CRED_R then
    redis.call('SET', KEYS[2], $CONSUMED .. v, 'KEEPTTL')
    emit(ARGV[21], ARGV[22])
    return {$CODE_FIRSTPARTY, ''}
  end
  if ARGV[15] == $CRED_R and ARGV[16] ~= '' then
    if redis.call('DEL', ARGV[18]) == 1 then
      redis.call('ZREM', KEYS[4], ARGV[16])
      redis.call('ZREM', KEYS[5], ARGV[16])
      redis.call('ZREM', KEYS[6], ARGV[16])
      redis.call('ZREM', KEYS[8], ARGV[16])
      emit(ARGV[19], ARGV[20])
      redis.call('PUBLISH', KEYS[9], ARGV[16])
    end
  end
  redis.call('HSET', KEYS[7], $FIELD_GRANT_SESSION, ARGV[8], $FIELD_GRANT_BY, ARGV[15])
  redis.call('PEXPIRE', KEYS[7], ARGV[23])
end
redis.call('SET', KEYS[2], $CONSUMED .. v, 'KEEPTTL')
redis.call('HSET', KEYS[3], $FIELD_RECORD, ARGV[1], $FIELD_SEEN, ARGV[2], $FIELD_CAP, ARGV[3], $FIELD_IDLE, ARGV[4], $FIELD_UNUSED, ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[8])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[8])
redis.call('ZADD', KEYS[6], ARGV[7], ARGV[8])
redis.call('ZADD', KEYS[8], ARGV[3], ARGV[8])
local id = emit(ARGV[9], ARGV[10])
return {$CODE_OK, id}
`)

// Redeem consumes r.JTI exactly once, across every instance sharing this
// Redis, and in the same atomic step creates r.Session and appends
// r.Redeemed. When the id is unknown or expired, or already consumed,
// nothing is created and the matching event is appended. It reports
// whether the session was opened and, if not, the token id's state.
func (s *Store) Redeem(ctx context.Context, r Redemption) (bool, State, error) {
	sess := r.Session
	rec, err := json.Marshal(sess)
	if err != nil {
		return false, Unknown, err
	}
	now := s.now()
	unused := int64(0)
	if r.Unused > 0 {
		unused = ms(now.Add(r.Unused))
	}
	d := deadline(ms(now), ms(sess.ExpiresAt), r.Idle.Milliseconds(), unused)
	args := []any{string(rec), ms(now), ms(sess.ExpiresAt), r.Idle.Milliseconds(), unused,
		recordTTL(ms(now), d, r.Idle.Milliseconds()), d, sess.ID}
	for _, e := range []audit.Encoded{r.Redeemed, r.Unknown, r.Consumed} {
		args = append(args, eventArgs(e)...)
	}
	grantKey := s.k.noGrant
	if a := r.Auto; a != nil {
		grantKey = s.key(keyGrant, a.Grant.GrantID)
		oldKey := ""
		if a.Seen.SID != "" {
			oldKey = s.key(keySession, a.Seen.SID)
		}
		args = append(args, a.Grant.Credential, a.Seen.SID, a.Seen.By, oldKey)
		args = append(args, eventArgs(a.Superseded)...)
		args = append(args, eventArgs(a.FirstParty)...)
		args = append(args, max(a.Grant.ExpiresAt.Sub(now), 0).Milliseconds()+time.Minute.Milliseconds())
	} else {
		args = append(args, "", "", "", "", "", "", "", "", 0)
	}
	code, _, err := pair(s.run(ctx, redeemScript, []string{s.k.audit, s.key(keyToken, r.JTI),
		s.key(keySession, sess.ID), s.k.sessions, s.key(keyAdminSessions, sess.Actor.ID), s.k.deadlines, grantKey,
		s.subjectSessions(sess.Subject), s.k.ends}, args...))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return false, Unknown, fmt.Errorf("store: redeem: %w", err)
	}
	switch code {
	case codeOK:
		return true, Live, err
	case codeConsumed:
		return false, Consumed, err
	case codeRace:
		return false, Live, ErrGrantChanged
	case codeFirstP:
		return false, Consumed, errors.Join(ErrFirstParty, err)
	}
	return false, Unknown, err
}

// GrantSession returns the session an auto-delivery grant has opened.
func (s *Store) GrantSession(ctx context.Context, grantID string) (GrantSession, error) {
	v, err := s.rdb.HMGet(ctx, s.key(keyGrant, grantID), fieldGrantSession, fieldGrantBy).Result()
	if err != nil {
		return GrantSession{}, fmt.Errorf("store: grant: %w", err)
	}
	sid, _ := v[0].(string)
	by, _ := v[1].(string)
	return GrantSession{SID: sid, By: by}, nil
}

// discardScript: KEYS[1] audit stream, KEYS[2] token key, KEYS[3] grant;
// ARGV[1] the grant's session the browser holds, ARGV[2..3] the event
// recording the discard, ARGV[4..5] when unknown, ARGV[6..7] when consumed.
var discardScript = lua(luaEmit + `
local v = redis.call('GET', KEYS[2])
if not v then
  emit(ARGV[4], ARGV[5])
  return {$CODE_UNKNOWN, ''}
end
if string.sub(v, 1, 1) == $CONSUMED then
  emit(ARGV[6], ARGV[7])
  return {$CODE_CONSUMED, ''}
end
if redis.call('HGET', KEYS[3], $FIELD_GRANT_SESSION) ~= ARGV[1] then return {$CODE_RACE, ''} end
redis.call('SET', KEYS[2], $CONSUMED .. v, 'KEEPTTL')
return {$CODE_DISCARDED, emit(ARGV[2], ARGV[3])}
`)

// Discard consumes the redirect credential jti of grant without opening a
// session, because the browser presenting it holds the grant's live session
// sid already (the webhook's cookie was kept), and appends ev. It refuses
// like Redeem for an unknown or consumed id, and with ErrGrantChanged when
// sid is no longer the grant's session.
func (s *Store) Discard(ctx context.Context, jti, grantID, sid string, ev, unknown, consumed audit.Encoded) (State, error) {
	args := []any{sid}
	for _, e := range []audit.Encoded{ev, unknown, consumed} {
		args = append(args, eventArgs(e)...)
	}
	code, _, err := pair(s.run(ctx, discardScript, []string{s.k.audit, s.key(keyToken, jti), s.key(keyGrant, grantID)}, args...))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return Unknown, fmt.Errorf("store: discard: %w", err)
	}
	switch code {
	case codeDiscarded:
		return Live, err
	case codeConsumed:
		return Consumed, err
	case codeRace:
		return Live, ErrGrantChanged
	}
	return Unknown, err
}

// deadline is when a session lapses unless seen again: its idle end, its
// cap, or its "never used" deadline, whichever comes first (ms).
func deadline(seen, capAt, idle, unused int64) int64 {
	d := min(seen+idle, capAt)
	if unused > 0 {
		d = min(d, unused)
	}
	return d
}

// recordTTL is how long Redis keeps a session record unseen: past its
// deadline by a grace of one idle timeout (at least a minute), so that the
// request or the sweeper that finds it lapsed can still read it and record
// its end. Redis's own expiry never ends a session silently.
func recordTTL(now, deadline, idle int64) int64 {
	grace := max(idle, time.Minute.Milliseconds())
	return max(deadline-now, 0) + grace
}
