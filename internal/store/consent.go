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

// Consent is a customer's permission to be impersonated until a time (the
// "Grant Login Access" of other products). Its Redis key expires at Until,
// so an expired consent is simply absent, to every reader and script.
type Consent struct {
	Subject   audit.Subject `json:"subject"`
	Until     time.Time     `json:"until"`
	Note      string        `json:"note,omitempty"`
	GrantedAt time.Time     `json:"granted_at"`
	GrantedBy string        `json:"granted_by"`
}

// ErrNoConsentRecord: the subject has no consent (never given, withdrawn,
// or expired).
var ErrNoConsentRecord = errors.New("store: no such consent")

// grantConsentScript: KEYS[1] audit stream, KEYS[2] consent key, KEYS[3]
// the consents' due set; ARGV[1] consent JSON, ARGV[2] TTL (ms),
// ARGV[3..4] the consent.granted event, ARGV[5] the subject's member,
// ARGV[6] until (ms). The due set tells the sweeper when the consent
// lapses (its key expires by itself).
var grantConsentScript = lua(luaEmit + `
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
return {$CODE_OK, emit(ARGV[3], ARGV[4])}
`)

// GrantConsent stores c (replacing the subject's consent, if any) until
// c.Until, and appends ev, in one step.
func (s *Store) GrantConsent(ctx context.Context, c Consent, ev audit.Encoded) error {
	ttl := c.Until.Sub(s.now())
	if ttl <= 0 {
		return errors.New("store: consent until is not in the future")
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	args := append([]any{string(b), max(ttl.Milliseconds(), 1)}, eventArgs(ev)...)
	args = append(args, subjectPart(c.Subject.Collection, c.Subject.ID), c.Until.UnixMilli())
	_, _, err = pair(s.run(ctx, grantConsentScript, []string{s.key(keyAudit), s.consentKey(c.Subject), s.key(keyConsentDue)}, args...))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return fmt.Errorf("store: grant consent: %w", err)
	}
	return err
}

// ConsentOf returns subj's active consent, or ErrNoConsentRecord.
func (s *Store) ConsentOf(ctx context.Context, subj audit.Subject) (Consent, error) {
	v, err := s.rdb.Get(ctx, s.consentKey(subj)).Result()
	if errors.Is(err, redis.Nil) {
		return Consent{}, ErrNoConsentRecord
	}
	if err != nil {
		return Consent{}, fmt.Errorf("store: consent: %w", err)
	}
	var c Consent
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		return Consent{}, fmt.Errorf("store: consent of %s:%s: %w", subj.Collection, subj.ID, err)
	}
	return c, nil
}

// ConsentActive reports whether subj has an active consent.
func (s *Store) ConsentActive(ctx context.Context, subj audit.Subject) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.consentKey(subj)).Result()
	if err != nil {
		return false, fmt.Errorf("store: consent: %w", err)
	}
	return n == 1, nil
}

// luaVoidTokens is prepended to the scripts that end a consent:
// voidTokens(tokens, prefix, now) deletes every token of the subject's set
// tokens (scored by expiry) that is still live at now and not redeemed yet
// (a later login with one is refused as an unknown token id), deletes the
// set, and returns how many it voided.
const luaVoidTokens = `
local function voidTokens(tokens, prefix, now)
  local n = 0
  for _, jti in ipairs(redis.call('ZRANGEBYSCORE', tokens, now, '+inf')) do
    local k = prefix .. jti
    local v = redis.call('GET', k)
    if v and string.sub(v, 1, 1) ~= $CONSUMED then
      redis.call('DEL', k)
      n = n + 1
    end
  end
  redis.call('DEL', tokens)
  return n
end
`

// withdrawConsentScript: KEYS[1] audit stream, KEYS[2] consent key, KEYS[3]
// the subject's unredeemed tokens; ARGV[1..2] the consent.withdrawn event,
// ARGV[3] the token keys' prefix, ARGV[4] now (ms).
// Deletes the consent and every token minted under it that is not redeemed
// yet (a later login with one is refused as an unknown token id), and
// appends the event, in one step: from here no new session of the subject
// can open, so the caller's revocation of its live sessions is final.
var withdrawConsentScript = lua(luaEmit + luaVoidTokens + `
if redis.call('DEL', KEYS[2]) == 0 then return {$CODE_NONE, ''} end
local n = voidTokens(KEYS[3], ARGV[3], ARGV[4])
emit(ARGV[1], ARGV[2])
return {$CODE_OK, tostring(n)}
`)

// WithdrawConsent deletes subj's consent, invalidates the tokens minted for
// subj and not redeemed yet, and appends ev, in one step. It reports how
// many tokens it invalidated, or ErrNoConsentRecord when there was no
// consent (then nothing changed and nothing was appended).
func (s *Store) WithdrawConsent(ctx context.Context, subj audit.Subject, ev audit.Encoded) (int, error) {
	part := subjectPart(subj.Collection, subj.ID)
	args := append(eventArgs(ev), s.key(keyToken, ""), ms(s.now()))
	code, payload, err := pair(s.run(ctx, withdrawConsentScript,
		[]string{s.key(keyAudit), s.key(keyConsent, part), s.key(keySubjectTokens, part)}, args...))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return 0, fmt.Errorf("store: withdraw consent: %w", err)
	}
	if code == codeNone {
		return 0, ErrNoConsentRecord
	}
	n, _ := strconv.Atoi(payload)
	return n, err
}

func (s *Store) consentKey(subj audit.Subject) string {
	return s.key(keyConsent, subjectPart(subj.Collection, subj.ID))
}

// DueConsents returns up to n subjects whose consent's until has passed by
// the store's clock and whose lapse is not handled yet (ExpireConsent,
// then ConsentHandled).
func (s *Store) DueConsents(ctx context.Context, n int64) ([]audit.Subject, error) {
	members, err := s.rdb.ZRangeByScore(ctx, s.key(keyConsentDue), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(s.now().UnixMilli(), 10), Count: n}).Result()
	if err != nil {
		return nil, fmt.Errorf("store: due consents: %w", err)
	}
	out := make([]audit.Subject, 0, len(members))
	for _, m := range members {
		c, id, ok := strings.Cut(m, ":")
		if !ok {
			continue
		}
		out = append(out, audit.Subject{Collection: collectionUnescaper.Replace(c), ID: id})
	}
	return out, nil
}

var collectionUnescaper = strings.NewReplacer("%3A", ":", "%25", "%")

// expireConsentScript: KEYS[1] consent key, KEYS[2] the subject's
// unredeemed tokens; ARGV[1] the token keys' prefix, ARGV[2] now (ms).
// When the consent is gone (lapsed, or withdrawn), voids the tokens minted
// under it and not redeemed yet, as a withdrawal does, so no session of
// the subject can open any more; a consent still present (granted again)
// is left alone.
var expireConsentScript = lua(luaVoidTokens + `
if redis.call('EXISTS', KEYS[1]) == 1 then return {$CODE_NONE, ''} end
local n = voidTokens(KEYS[2], ARGV[1], ARGV[2])
return {$CODE_OK, tostring(n)}
`)

// ExpireConsent handles the lapse of subj's consent: when it is gone, the
// tokens minted under it and not redeemed yet are voided, and it reports
// true (the caller then revokes the subject's live sessions and calls
// ConsentHandled); a consent granted again meanwhile is false.
func (s *Store) ExpireConsent(ctx context.Context, subj audit.Subject) (bool, error) {
	part := subjectPart(subj.Collection, subj.ID)
	code, _, err := pair(s.run(ctx, expireConsentScript, []string{s.consentKey(subj), s.key(keySubjectTokens, part)},
		s.key(keyToken, ""), ms(s.now())))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return false, fmt.Errorf("store: expire consent: %w", err)
	}
	return code == codeOK, err
}

// consentHandledScript: KEYS[1] the consents' due set; ARGV[1] the
// subject's member, ARGV[2] now (ms). Forgets the member unless it was
// granted again with a later until.
var consentHandledScript = lua(`
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return {$CODE_OK, ''}
`)

// ConsentHandled forgets subj's consent lapse once its sessions are
// revoked, unless the consent was granted again meanwhile (its new until
// is kept).
func (s *Store) ConsentHandled(ctx context.Context, subj audit.Subject) error {
	_, _, err := pair(s.run(ctx, consentHandledScript, []string{s.key(keyConsentDue)},
		subjectPart(subj.Collection, subj.ID), ms(s.now())))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return fmt.Errorf("store: consent handled: %w", err)
	}
	return nil
}
