package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
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

// storedGrant is a grant as Redis keeps it: with its audit context (see
// audit.Context), which the redeem script puts in the events and the
// session of a login in place of the token's claims.
type storedGrant struct {
	Grant
	Ctx string `json:"ctx"` // the events' bytes from "actor" to "reason"
	Idx string `json:"idx"` // the events' index names, joined by spaces
}

// stored is g's JSON as Redis keeps it.
func (g Grant) stored() ([]byte, error) {
	ctx, idx := audit.Context(audit.Event{Actor: g.Actor, Requester: g.Requester, Subject: g.Subject, Reason: g.Reason})
	return json.Marshal(storedGrant{Grant: g, Ctx: ctx, Idx: idx})
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
var reserveScript = lua(luaEmit + luaCount + `
if ARGV[13] == '1' and redis.call('EXISTS', KEYS[6]) == 0 then
  emit(ARGV[14], ARGV[15])
  return {$CODE_CONSENT, ''}
end
local limit = tonumber(ARGV[5])
if limit > 0 then
  local n, ttl = count(KEYS[3], ARGV[6])
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
-- The record's unredeemed tokens, which a consent withdrawal voids: kept
-- only where consent is required (elsewhere there is none to withdraw).
if ARGV[13] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. ARGV[16])
  redis.call('ZADD', KEYS[7], ARGV[17], ARGV[18])
  if ARGV[12] ~= '' then redis.call('ZADD', KEYS[7], ARGV[17], ARGV[19]) end
  if redis.call('PTTL', KEYS[7]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[7], ARGV[2]) end
end
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
	grant, err := r.Grant.stored()
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
		b, err := p.Grant.stored()
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

// Redemption is one login: the token id it consumes, the session it opens
// and the events of each outcome, the session and the events built from
// the token's claims alone. The redeem script checks the claims against the
// token's grant, and puts the grant's context (its actor with team and
// role, requester, subject and reason: audit.Context) in place of the
// claims' in the session and in each event that holds them.
type Redemption struct {
	JTI     string
	Session Session // from the token's claims
	Idle    time.Duration
	// Unused, when positive, ends the session as "never used" if no
	// request presents it within this time of its start.
	Unused   time.Duration
	Redeemed audit.Encoded // on success
	Unknown  audit.Encoded // the id was never minted, or expired
	// Consumed is every other refusal: a replay, a grant that disagrees, a
	// first-party refusal. Unknown when empty (with Details, one event
	// serves every refusal: the script gives it its detail).
	Consumed audit.Encoded
	// Auto delivery (the grant decides; the caller cannot know beforehand).
	// Cookie is the session id of the cookie the request carries ("": none):
	// a redirect credential presented with the grant's live session is
	// discarded, with Discarded. Superseded ends the webhook credential's
	// session that a redirect credential supersedes: encoded without token
	// and session id, which the script fills in (the pair's token id, the
	// superseded session's).
	Cookie     string
	Discarded  audit.Encoded
	Superseded audit.Encoded
	// Details, when set, are the details the script gives each event by
	// outcome: the events are then encoded without one. Nil appends none.
	Details *Details
	// DeferReplay, when set, has a replay (the token id consumed already)
	// append nothing: Redeem returns *Replayed with the replay's event,
	// filled in as it would have been appended, and how often the token
	// was presented again, for the caller to count and fold (a replay
	// changes nothing, so its event needs no atomic step with it).
	DeferReplay bool
}

// Replayed is Redeem's answer to a replay under DeferReplay: the event to
// append, and which replay of its token this is (1 for the first).
type Replayed struct {
	Event audit.Encoded
	N     int64
}

func (r *Replayed) Error() string { return fmt.Sprintf("store: token replayed (%d times)", r.N) }

// Details are the details of a redemption's events, one per outcome. A
// Details is meant to be built once and shared (it is not changed after
// its first use).
type Details struct {
	Unknown     string // the token id is unknown: never minted, or expired
	Disagree    string // the token and its grant disagree
	Replay      string // a plain grant's token presented again
	ReplayW     string // an auto grant's webhook credential presented again
	ReplayR     string // an auto grant's redirect credential presented again
	RedeemedW   string // the webhook credential opened the grant's session
	RedeemedR   string // the redirect credential opened it
	Superseding string // the redirect credential opened it, ending the webhook's session
	Superseded  string // the end of the webhook's session it superseded
	FirstParty  string // the webhook credential refused: the redirect credential opened the session first
	Discarded   string // the redirect credential not needed: the browser holds the grant's live session

	once sync.Once
	args []any // each as a JSON string, for the script
}

func (d *Details) scriptArgs() []any {
	if d == nil {
		return noDetails
	}
	d.once.Do(func() {
		for _, s := range []string{d.Unknown, d.Disagree, d.Replay, d.ReplayW, d.ReplayR, d.RedeemedW, d.RedeemedR,
			d.Superseding, d.Superseded, d.FirstParty, d.Discarded} {
			q := ""
			if s != "" {
				b, _ := json.Marshal(s) // a string always marshals
				q = string(b)
			}
			d.args = append(d.args, q)
		}
	})
	return d.args
}

const detailArgs = 11

var noDetails = []any{"", "", "", "", "", "", "", "", "", "", ""}

// grantGrace is how long an auto-delivery grant's record of its session
// outlives its tokens.
const grantGrace = time.Minute

// ErrFirstParty: a webhook credential arrived after its grant's session was
// opened first-party; it was consumed and its refusal appended.
var ErrFirstParty = errors.New("store: the grant's session was opened first-party already")

// ErrDiscarded: a redirect credential arrived in a browser that holds its
// grant's live session (Redemption.Cookie); it was consumed without opening
// another, and Discarded appended.
var ErrDiscarded = errors.New("store: the browser holds the grant's live session already")

// ErrDisagree: the token's claims (actor id, subject) are not its grant's;
// nothing was consumed, and the refusal was appended.
var ErrDisagree = errors.New("store: the token and its server-side grant disagree")

// redeemScript: KEYS[1] audit stream, KEYS[2] token key, KEYS[3] session
// key, KEYS[4] session index, KEYS[5] the admin's session index, KEYS[6]
// session deadlines, KEYS[7] the session-ends channel, KEYS[8] the key of
// the cookie's session; ARGV[1..3] the claims' actor id, subject
// collection and subject id, ARGV[4] the claims' context (audit.Context),
// ARGV[5] session JSON, ARGV[6..7] where its context starts (bytes before
// it) and where the rest resumes (1-based), ARGV[8] now (ms), ARGV[9] cap
// (ms), ARGV[10] idle (ms), ARGV[11] unused deadline (ms, 0: none),
// ARGV[12] record TTL (ms), ARGV[13] first deadline (ms), ARGV[14] session
// id, ARGV[15..16] redeemed event, ARGV[17..18] event when unknown,
// ARGV[19..20] event of the other refusals, ARGV[21..22] superseded event,
// ARGV[23..24] discarded event, ARGV[25] the cookie's session id, ARGV[26]
// the key prefix, ARGV[27..37] the details (Details, as JSON strings),
// ARGV[38] the claims' scope; KEYS[9] the subject's session index;
// ARGV[39] "1" to defer a replay's event (DeferReplay), KEYS[10] the
// token's replay counter.
//
// One step, one round trip: reads the grant, checks it against the claims,
// consumes the token id, applies the auto-delivery rules (the grant keeps
// at most one live session), creates the session with its indexes, and
// appends the outcome's events, each with the grant's context and indexes
// (a grant stored without them keeps the claims').
var redeemScript = lua(luaEmit + luaLapsed + `
local frag = ARGV[4]
local function fill(ev, ctx, d, extra)
  if ctx ~= frag or extra ~= '' then
    local i, j = string.find(ev, frag, 1, true)
    if i then ev = string.sub(ev, 1, i - 1) .. ctx .. extra .. string.sub(ev, j + 1) end
  end
  if d ~= '' then ev = string.sub(ev, 1, -2) .. ',"detail":' .. d .. '}' end
  return ev
end
local v = redis.call('GET', KEYS[2])
if not v then return {$CODE_UNKNOWN, emit(fill(ARGV[17], frag, ARGV[27], ''), ARGV[18])} end
local consumed = string.sub(v, 1, 1) == $CONSUMED
if consumed then v = string.sub(v, 2) end
local g = cjson.decode(v)
local gscope = g.scope
if type(gscope) ~= 'string' or gscope == '' then gscope = 'full' end
if type(g.actor) ~= 'table' or type(g.subject) ~= 'table' or g.actor.id ~= ARGV[1] or
    g.subject.collection ~= ARGV[2] or g.subject.id ~= ARGV[3] or gscope ~= ARGV[38] then
  return {$CODE_DISAGREE, emit(fill(ARGV[19], frag, ARGV[28], ''), ARGV[20])}
end
local ctx, idx = frag, nil
if type(g.ctx) == 'string' and g.ctx ~= '' and type(g.idx) == 'string' then ctx, idx = g.ctx, g.idx end
local function put(ev, own, d, extra) return emit(fill(ev, ctx, d, extra), idx or own) end
local cred = ''
if type(g.grant) == 'string' and g.grant ~= '' then
  if g.cred == $CRED_R then cred = $CRED_R else cred = $CRED_W end
end
if consumed then
  local d = ARGV[29]
  if cred == $CRED_W then d = ARGV[30] elseif cred == $CRED_R then d = ARGV[31] end
  if ARGV[39] == '1' then
    local n = redis.call('INCR', KEYS[10])
    if n == 1 then redis.call('PEXPIRE', KEYS[10], math.max(redis.call('PTTL', KEYS[2]), 1000)) end
    return {$CODE_CONSUMED, cjson.encode({n = n, ev = fill(ARGV[19], ctx, d, ''), idx = idx or ARGV[20]})}
  end
  return {$CODE_CONSUMED, put(ARGV[19], ARGV[20], d, '')}
end
local detail = ''
if cred ~= '' then
  if ARGV[21] == '' then return {$CODE_INCOMPLETE, ''} end
  local gk = ARGV[26] .. ':' .. $KEY_GRANT .. ':' .. g.grant
  local gs = redis.call('HMGET', gk, $FIELD_GRANT_SESSION, $FIELD_GRANT_BY)
  local seen, by = gs[1] or '', gs[2] or ''
  if cred == $CRED_R and seen ~= '' and seen == ARGV[25] and ARGV[23] ~= '' then
    local h = redis.call('HMGET', KEYS[8], $FIELD_RECORD, $FIELD_SEEN, $FIELD_CAP, $FIELD_IDLE, $FIELD_UNUSED)
    if h[1] and not lapsed(h, tonumber(ARGV[8])) then
      redis.call('SET', KEYS[2], $CONSUMED .. v, 'KEEPTTL')
      return {$CODE_DISCARDED, put(ARGV[23], ARGV[24], ARGV[37], '')}
    end
  end
  if cred == $CRED_W and by == $CRED_R then
    redis.call('SET', KEYS[2], $CONSUMED .. v, 'KEEPTTL')
    return {$CODE_FIRSTPARTY, put(ARGV[19], ARGV[20], ARGV[36], '')}
  end
  if cred == $CRED_R then detail = ARGV[33] else detail = ARGV[32] end
  if cred == $CRED_R and seen ~= '' and by == $CRED_W then
    detail = ARGV[34]
    if redis.call('DEL', ARGV[26] .. ':' .. $KEY_SESSION .. ':' .. seen) == 1 then
      redis.call('ZREM', KEYS[4], seen)
      redis.call('ZREM', KEYS[5], seen)
      redis.call('ZREM', KEYS[6], seen)
      redis.call('ZREM', KEYS[9], seen)
      local pair = ''
      if type(g.pair) == 'string' then pair = g.pair end
      put(ARGV[21], ARGV[22], ARGV[35], ',"token_id":' .. cjson.encode(pair) .. ',"session_id":' .. cjson.encode(seen))
      redis.call('PUBLISH', KEYS[7], seen)
    end
  end
  redis.call('HSET', gk, $FIELD_GRANT_SESSION, ARGV[14], $FIELD_GRANT_BY, cred)
  redis.call('PEXPIRE', gk, math.max(redis.call('PTTL', KEYS[2]), 0) + $GRANT_GRACE)
end
redis.call('SET', KEYS[2], $CONSUMED .. v, 'KEEPTTL')
local rec = ARGV[5]
if ctx ~= frag then rec = string.sub(rec, 1, tonumber(ARGV[6])) .. ctx .. string.sub(rec, tonumber(ARGV[7])) end
redis.call('HSET', KEYS[3], $FIELD_RECORD, rec, $FIELD_SEEN, ARGV[8], $FIELD_CAP, ARGV[9], $FIELD_IDLE, ARGV[10], $FIELD_UNUSED, ARGV[11])
redis.call('PEXPIRE', KEYS[3], ARGV[12])
redis.call('ZADD', KEYS[4], ARGV[9], ARGV[14])
redis.call('ZADD', KEYS[5], ARGV[9], ARGV[14])
redis.call('ZADD', KEYS[6], ARGV[13], ARGV[14])
redis.call('ZADD', KEYS[9], ARGV[9], ARGV[14])
return {$CODE_OK, put(ARGV[15], ARGV[16], detail, '')}
`)

// Redeem consumes r.JTI exactly once, across every instance sharing this
// Redis, and in the same atomic step (one round trip) checks it against its
// grant, creates r.Session with the grant's context and appends r.Redeemed
// with it. An auto-delivery grant keeps at most one live session: a
// redirect credential is discarded (ErrDiscarded) when the request's
// cookie holds the grant's live session, and otherwise supersedes the
// webhook credential's session; a webhook credential after the redirect
// credential's session is refused (ErrFirstParty). When the id is unknown
// or expired, or already consumed, or its grant disagrees with the claims
// (ErrDisagree), nothing is created and the matching event is appended.
// It reports whether the session was opened and, if not, the token id's
// state.
func (s *Store) Redeem(ctx context.Context, r Redemption) (bool, State, error) {
	sess := r.Session
	rec, err := json.Marshal(sess)
	if err != nil {
		return false, Unknown, err
	}
	at, end, err := sessionContext(rec, sess)
	if err != nil {
		return false, Unknown, err
	}
	frag, _ := audit.Context(audit.Event{Actor: sess.Actor, Requester: sess.Requester, Subject: sess.Subject, Reason: sess.Reason})
	if len(r.Consumed.JSON) == 0 {
		r.Consumed = r.Unknown
	}
	if r.Details != nil {
		// The script puts the grant's context where the claims' is, and
		// appends the detail: events made otherwise would come out wrong.
		fb := []byte(frag)
		for _, e := range []audit.Encoded{r.Redeemed, r.Unknown, r.Consumed, r.Superseded, r.Discarded} {
			if len(e.JSON) > 0 && !bytes.Contains(e.JSON, fb) {
				return false, Unknown, fmt.Errorf("store: redeem: an event of %s does not hold the claims' context", r.JTI)
			}
		}
	}
	now := s.now()
	unused := int64(0)
	if r.Unused > 0 {
		unused = ms(now.Add(r.Unused))
	}
	d := deadline(ms(now), ms(sess.ExpiresAt), r.Idle.Milliseconds(), unused)
	args := make([]any, 0, 26+detailArgs)
	args = append(args, sess.Actor.ID, sess.Subject.Collection, sess.Subject.ID, frag, string(rec), at, end,
		ms(now), ms(sess.ExpiresAt), r.Idle.Milliseconds(), unused, recordTTL(ms(now), d, r.Idle.Milliseconds()), d, sess.ID)
	for _, e := range []audit.Encoded{r.Redeemed, r.Unknown, r.Consumed, r.Superseded, r.Discarded} {
		args = append(args, eventArgs(e)...)
	}
	args = append(args, r.Cookie, s.prefix)
	args = append(args, r.Details.scriptArgs()...)
	scope := sess.Scope
	if scope == "" {
		scope = "full" // sessions before scopes: full access
	}
	deferReplay := ""
	if r.DeferReplay {
		deferReplay = "1"
	}
	args = append(args, scope, deferReplay)
	cookieKey := s.k.noSession
	if r.Cookie != "" {
		cookieKey = s.key(keySession, r.Cookie)
	}
	code, payload, err := pair(s.run(ctx, redeemScript, []string{s.k.audit, s.key(keyToken, r.JTI),
		s.key(keySession, sess.ID), s.k.sessions, s.key(keyAdminSessions, sess.Actor.ID), s.k.deadlines, s.k.ends, cookieKey,
		s.subjectSessions(sess.Subject), s.key(keyReplays, r.JTI)}, args...))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return false, Unknown, fmt.Errorf("store: redeem: %w", err)
	}
	switch code {
	case codeOK:
		return true, Live, err
	case codeConsumed:
		if r.DeferReplay {
			var rep struct {
				N   int64  `json:"n"`
				Ev  string `json:"ev"`
				Idx string `json:"idx"`
			}
			if jerr := json.Unmarshal([]byte(payload), &rep); jerr != nil {
				return false, Consumed, fmt.Errorf("store: redeem: replay answer: %w", jerr)
			}
			return false, Consumed, &Replayed{N: rep.N, Event: audit.Encoded{JSON: []byte(rep.Ev), Indexes: strings.Fields(rep.Idx)}}
		}
		return false, Consumed, err
	case codeDisagree:
		return false, Unknown, errors.Join(ErrDisagree, err)
	case codeFirstP:
		return false, Consumed, errors.Join(ErrFirstParty, err)
	case codeDiscarded:
		return false, Consumed, errors.Join(ErrDiscarded, err)
	case codeIncomplete:
		return false, Live, fmt.Errorf("store: redeem: %s is an auto-delivery credential, and no superseded event was given", r.JTI)
	}
	return false, Unknown, err
}

// sessionContext is where the session record rec holds sess's context
// (actor to reason, as audit.Context, uncapped): the bytes before it, and
// the 1-based position of the first byte after it.
func sessionContext(rec []byte, sess Session) (int, int, error) {
	b, err := json.Marshal(struct {
		Actor     audit.Actor   `json:"actor"`
		Requester *audit.Actor  `json:"requester,omitempty"`
		Subject   audit.Subject `json:"subject"`
		Reason    string        `json:"reason,omitempty"`
	}{sess.Actor, sess.Requester, sess.Subject, sess.Reason})
	if err != nil {
		return 0, 0, err
	}
	frag := b[1 : len(b)-1]
	i := bytes.Index(rec, frag)
	if i < 0 {
		return 0, 0, fmt.Errorf("store: session %s: its record does not hold its context", sess.ID)
	}
	return i, i + len(frag) + 1, nil
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
