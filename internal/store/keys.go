package store

import (
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Every name the service gives Redis has its one source here: key names,
// stream field names, the consumed marker and the script result codes. The
// Lua sources are built from these constants (see lua), never from retyped
// literals.

// Key names, each under the store's {hash tag} prefix.
const (
	keyToken          = "jti"               // jti:<id> → grant JSON (consumedMark-prefixed once redeemed)
	keyApproval       = "approval"          // approval:<digest> → "1" while a used approval could be replayed
	keyAudit          = "audit"             // the audit stream
	keyCheckpoints    = "audit:checkpoints" // the checkpoint stream
	keySession        = "session"           // session:<sid> → hash of the record
	keySessions       = "sessions"          // sorted set: sid by absolute cap
	keyAdminSessions  = "admin-sessions"    // admin-sessions:<admin id> → sorted set: sid by cap
	keyDeadlines      = "session-deadlines" // sorted set: sid by the time it lapses unless seen
	keyRate           = "rate"              // rate:<kind>:<who> → fixed-window counter
	keySweepLease     = "sweep-lease"       // who sweeps lapsed sessions now
	keyCheckpointSeal = "audit:sealed"      // the newest checkpoint's seq, never lowered
	keyGrant          = "grant"             // grant:<id> → hash: the one live session of an auto-delivery grant
	keySessionEnds    = "session-ends"      // pub/sub channel: the id of every session that ends
	keySubjectSess    = "subject-sessions"  // subject-sessions:<collection>:<id> → sorted set: sid by cap (subjectPart)
	keySubjectTokens  = "subject-tokens"    // subject-tokens:<collection>:<id> → sorted set: unredeemed jti by expiry
	keyConsent        = "consent"           // consent:<collection>:<id> → Consent JSON, expiring (PX) at its until
	keyConsentDue     = "consent-due"       // sorted set: subjectPart of each consent by its until (ms): when its sessions end
	keyActivity       = "activity"          // activity:<sid> → list: the session's first MaxActivity requests (ActivityEntry JSON)
	keyActivityCount  = "activity-count"    // activity-count:<sid> → every request of the session, counted
	keyReplays        = "replays"           // replays:<jti> → how often a redeemed token was presented again, until it expires
)

// Stream field names.
const (
	fieldEvent      = "e" // an audit stream entry's event JSON
	fieldCheckpoint = "c" // a checkpoint stream entry's checkpoint JSON
)

// Session hash fields.
const (
	fieldRecord = "rec"  // the Session JSON
	fieldSeen   = "seen" // last seen, ms since the epoch
	fieldCap    = "cap"  // absolute cap, ms since the epoch
	fieldIdle   = "idle" // idle timeout, ms
	fieldUnused = "unu"  // "never used" deadline, ms since the epoch; 0 once used or when off
)

// Grant hash fields (auto delivery).
const (
	fieldGrantSession = "sid" // the grant's session
	fieldGrantBy      = "by"  // the credential that opened it: CredentialWebhook or CredentialRedirect
)

// The two credentials of an auto-delivery grant.
const (
	CredentialWebhook  = "W" // in the webhook body; its cookie may be dropped as third-party
	CredentialRedirect = "R" // in redirectTo's fragment; redeemed first-party by the start page
)

// consumedMark prefixes the grant of a redeemed token id: it is kept until
// the token would have expired, so a replay is told from an unknown id.
const consumedMark = "x"

// Script result codes. Each has its own value.
const (
	codeOK         = 1  // done
	codeDuplicate  = 2  // reserve: the token id exists
	codeUnknown    = 3  // consume: no such token id (never minted, or expired)
	codeConsumed   = 4  // consume: already redeemed
	codeRate       = 5  // a rate limit refused
	codeRace       = 6  // a compare-and-append lost to another writer
	codeNone       = 7  // no such session
	codeLapsed     = 8  // the session was found idle, past its cap, or never used
	codeApproval   = 9  // reserve: the approval was already used
	codeFirstP     = 10 // redeem W: the grant's session was opened first-party already
	codeDiscarded  = 11 // redeem R: not needed, the webhook's session is live in this browser
	codeConsent    = 12 // reserve: the subject's collection requires consent and it has none
	codeDisagree   = 13 // redeem: the token's claims are not its grant's
	codeIncomplete = 14 // redeem: an auto-delivery credential without the events auto delivery needs
)

// lua builds a script from src, replacing each $NAME with the constant of
// that name, so the Lua and the Go read the same values.
func lua(src string) *redis.Script {
	return redis.NewScript(luaReplacer.Replace(src))
}

var luaReplacer = strings.NewReplacer(
	"$FIELD_EVENT", quote(fieldEvent),
	"$FIELD_CHECKPOINT", quote(fieldCheckpoint),
	"$FIELD_RECORD", quote(fieldRecord),
	"$FIELD_SEEN", quote(fieldSeen),
	"$FIELD_CAP", quote(fieldCap),
	"$FIELD_IDLE", quote(fieldIdle),
	"$FIELD_UNUSED", quote(fieldUnused),
	"$CONSUMED", quote(consumedMark),
	"$CODE_OK", strconv.Itoa(codeOK),
	"$CODE_DUPLICATE", strconv.Itoa(codeDuplicate),
	"$CODE_UNKNOWN", strconv.Itoa(codeUnknown),
	"$CODE_CONSUMED", strconv.Itoa(codeConsumed),
	"$CODE_RATE", strconv.Itoa(codeRate),
	"$CODE_RACE", strconv.Itoa(codeRace),
	"$CODE_NONE", strconv.Itoa(codeNone),
	"$CODE_LAPSED", strconv.Itoa(codeLapsed),
	"$CODE_APPROVAL", strconv.Itoa(codeApproval),
	"$CODE_FIRSTPARTY", strconv.Itoa(codeFirstP),
	"$CODE_DISCARDED", strconv.Itoa(codeDiscarded),
	"$CODE_CONSENT", strconv.Itoa(codeConsent),
	"$FIELD_GRANT_SESSION", quote(fieldGrantSession),
	"$FIELD_GRANT_BY", quote(fieldGrantBy),
	"$CRED_W", quote(CredentialWebhook),
	"$CRED_R", quote(CredentialRedirect),
	"$CODE_DISAGREE", strconv.Itoa(codeDisagree),
	"$CODE_INCOMPLETE", strconv.Itoa(codeIncomplete),
	"$KEY_GRANT", quote(keyGrant),
	"$KEY_SESSION", quote(keySession),
	"$GRANT_GRACE", strconv.FormatInt(grantGrace.Milliseconds(), 10),
)

func quote(s string) string { return "'" + s + "'" }

// subjectPart names a subject inside a key: the collection (':' and '%'
// escaped, so that no collection and id pair reads as another) and the id.
func subjectPart(collection, id string) string {
	return collectionEscaper.Replace(collection) + ":" + id
}

var collectionEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

// key returns the full name of one of the service's keys: prefix:parts...,
// built in one allocation (it is on every request's path).
func (s *Store) key(parts ...string) string {
	n := len(s.prefix)
	for _, p := range parts {
		n += 1 + len(p)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(s.prefix)
	for _, p := range parts {
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}

// fixedKeys are the keys whose names never change, built once.
type fixedKeys struct {
	audit, sessions, deadlines, ends string
	// Placeholders for optional keys a script is passed but does not use
	// (scripts declare every key they may touch, in one slot).
	noRate, noApproval, noToken, noSession string
}

func (s *Store) buildKeys() {
	s.k = fixedKeys{
		audit: s.key(keyAudit), sessions: s.key(keySessions), deadlines: s.key(keyDeadlines), ends: s.key(keySessionEnds),
		noRate: s.key(keyRate, "none"), noApproval: s.key(keyApproval, "none"), noToken: s.key(keyToken, "none"), noSession: s.key(keySession, "none"),
	}
}

// Notifications (internal/notify, store/notify.go): the audit stream's
// consumer group and the delivery state kept beside it.
const (
	groupNotify     = "notify"       // consumer group on the audit stream shared by every instance's notifier
	keyNotifyState  = "notify:state" // notify:state:<stream id> → hash: URL id → delivery state ("a <attempts> <next-at ms>", ok, dead)
	keyNotifyDead   = "notify:dead"  // stream of deliveries that finally failed
	fieldDeadEvent  = "id"           // dead letter: the event id (its webhook-id)
	fieldDeadStream = "sid"          // dead letter: the event's audit stream id
	fieldDeadURL    = "url"          // dead letter: the URL, redacted (Target.Redacted)
	fieldDeadTarget = "target"       // dead letter: the URL's id (a digest of it)
	fieldDeadError  = "error"        // dead letter: the last attempt's error
	fieldDeadTries  = "attempts"     // dead letter: how many attempts were made
	stateDone       = "ok"           // state: delivered
	stateDead       = "dead"         // state: dead-lettered
)
