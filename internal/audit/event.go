// Package audit defines the audit events of impersonator: who impersonated
// whom, when, why, from where, and what happened.
package audit

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Type names what happened. The set is part of the external contract
// (DESIGN.md 3.6).
type Type string

// The event types of DESIGN.md 3.6.
const (
	Minted   Type = "impersonation.minted"
	Denied   Type = "impersonation.denied"
	Redeemed Type = "impersonation.redeemed"
	Rejected Type = "impersonation.rejected"
	Ended    Type = "session.ended"
	Revoked  Type = "session.revoked"
	// Customer consent (DESIGN.md 3.7): granted and withdrawn through the
	// admin API, each written with the consent's state in one step.
	ConsentGranted   Type = "consent.granted"
	ConsentWithdrawn Type = "consent.withdrawn"
	// Viewed: someone read an impersonation history (the Forest action
	// Impersonation history), or was refused it.
	Viewed Type = "audit.viewed"
	// AuditAccepted (README, "Audit log"): an operator's `impersonator
	// audit accept`, with the statement as its reason. The checkpoint that
	// covers it carries the same statement, signed; that pair is what
	// clears a running instance's integrity alarm.
	AuditAccepted Type = "audit.accepted"
)

// Types lists every event type, in the order of the contract.
var Types = []Type{Minted, Denied, Redeemed, Rejected, Ended, Revoked, ConsentGranted, ConsentWithdrawn, Viewed, AuditAccepted}

// Valid reports whether t is one of the contract's event types.
func (t Type) Valid() bool {
	for _, k := range Types {
		if t == k {
			return true
		}
	}
	return false
}

// Actor is the admin who impersonates (or asks to).
type Actor struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Team  string `json:"team,omitempty"`
	Role  string `json:"role,omitempty"`
	// Name is the admin's first and last name (the Forest JWT's firstName
	// and lastName), shown in the customer's history instead of the email.
	Name string `json:"name,omitempty"`
	// PermissionLevel is the Forest permission level, kept so that a
	// reloaded policy can judge a live session's admin again.
	PermissionLevel string `json:"permission_level,omitempty"`
}

// Subject is the impersonated customer record.
type Subject struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
}

// Event is one audit record. It never holds a token: TokenID is the token's
// jti.
type Event struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Type      Type      `json:"type"`
	Actor     Actor     `json:"actor"`
	Requester *Actor    `json:"requester,omitempty"` // with a Forest approval: who asked; Actor approved and executed
	Subject   Subject   `json:"subject"`
	Reason    string    `json:"reason,omitempty"`
	// Scope is the impersonation's access, "read" or "full", on every
	// event of one impersonation; absent on events with none (a 401).
	Scope     string `json:"scope,omitempty"`
	TokenID   string `json:"token_id,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Detail    string `json:"detail,omitempty"`
	// Requests, on a session's end (session.ended, session.revoked), is
	// the number of requests its activity trail counted.
	Requests *int64 `json:"requests,omitempty"`
}

// idEncoding is lower-case base32 without padding: URL- and shell-safe.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a fresh random event id (128 bits from crypto/rand).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return "evt_" + idEncoding.EncodeToString(b[:])
}

// Stamp fills the event's id and time when they are unset, and normalises the
// time to UTC with a precision of one millisecond (RFC 3339 on the wire).
func (e *Event) Stamp(now time.Time) {
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Time = e.Time.UTC().Truncate(time.Millisecond)
}

// Validate reports whether the event can be written.
func (e *Event) Validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("audit: event without id")
	case e.Time.IsZero():
		return fmt.Errorf("audit: event %s without time", e.ID)
	case !e.Type.Valid():
		return fmt.Errorf("audit: event %s has unknown type %q", e.ID, e.Type)
	}
	return nil
}

// Marshal returns the event's wire form (JSON), after Validate.
func (e *Event) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(e)
}

// Stored caps (DESIGN.md 3.7): what an anonymous request can make the log
// keep is bounded.
const (
	MaxReasonBytes    = 1000
	MaxUserAgentBytes = 512
	maxDetailBytes    = 2000
	maxFieldBytes     = 320 // ids, emails, team and role names
)

// Encoded is an event ready for the store: its bytes, which the store keeps
// as they are (the checkpoints hash them), and the names of the indexes it
// belongs to (one per subject and per actor id and email), which the store
// appends to in the same atomic step.
type Encoded struct {
	JSON    []byte
	Indexes []string
}

// Encoder stamps and encodes events with one clock.
type Encoder struct{ Now func() time.Time }

// Encode stamps ev (id and time when unset), caps its free-text fields,
// validates it and returns its stored form.
func (c Encoder) Encode(ev Event) (Encoded, error) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	ev.Stamp(now())
	ev.capFields()
	b, err := ev.Marshal()
	if err != nil {
		return Encoded{}, err
	}
	return Encoded{JSON: b, Indexes: ev.indexes()}, nil
}

// eventContext is the part of an Event that says whose impersonation it
// records: the fields from Actor to Reason, with Event's tags, in Event's
// order.
type eventContext struct {
	Actor     Actor   `json:"actor"`
	Requester *Actor  `json:"requester,omitempty"`
	Subject   Subject `json:"subject"`
	Reason    string  `json:"reason,omitempty"`
}

// Context returns the bytes ev's stored form holds for its actor,
// requester, subject and reason (`"actor":{…},…,"reason":"…"`, after the
// caps Encode applies), and the names of the indexes ev belongs to, joined
// by spaces. A store holding a grant's context can put it in place of
// another one in an encoded event: the event then reads as if encoded
// with the grant's.
func Context(ev Event) (fragment, indexes string) {
	ev.capFields()
	b, err := json.Marshal(eventContext{Actor: ev.Actor, Requester: ev.Requester, Subject: ev.Subject, Reason: ev.Reason})
	if err != nil { // strings and structs of strings always marshal
		panic(err)
	}
	return string(b[1 : len(b)-1]), strings.Join(ev.indexes(), " ")
}

// capFields truncates every string an outsider can choose to its stored
// bound, on a UTF-8 boundary.
func (e *Event) capFields() {
	e.Reason = truncate(e.Reason, MaxReasonBytes)
	e.UserAgent = truncate(e.UserAgent, MaxUserAgentBytes)
	e.Detail = truncate(e.Detail, maxDetailBytes)
	e.Scope = truncate(e.Scope, 8)
	for _, a := range []*Actor{&e.Actor, e.Requester} {
		if a == nil {
			continue
		}
		a.ID, a.Email = truncate(a.ID, maxFieldBytes), truncate(a.Email, maxFieldBytes)
		a.Team, a.Role = truncate(a.Team, maxFieldBytes), truncate(a.Role, maxFieldBytes)
		a.Name, a.PermissionLevel = truncate(a.Name, maxFieldBytes), truncate(a.PermissionLevel, maxFieldBytes)
	}
	e.Subject.Collection = truncate(e.Subject.Collection, maxFieldBytes)
	e.Subject.ID = truncate(e.Subject.ID, maxFieldBytes)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Index names. A query by subject or actor reads only its index.
func subjectIndex(collection, id string) string { return "sc:" + collection + ":" + id }
func subjectIDIndex(id string) string           { return "si:" + id }
func actorIndex(q string) string                { return "a:" + strings.ToLower(q) }

// indexes lists the indexes ev belongs to: its subject, and each of its
// actor's and requester's id and email.
func (e *Event) indexes() []string {
	var out []string
	if e.Subject.ID != "" {
		out = append(out, subjectIndex(e.Subject.Collection, e.Subject.ID), subjectIDIndex(e.Subject.ID))
	}
	for _, a := range []*Actor{&e.Actor, e.Requester} {
		if a == nil {
			continue
		}
		for _, q := range []string{a.ID, a.Email} {
			if q == "" {
				continue
			}
			if name := actorIndex(q); !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	for i, name := range out {
		out[i] = strings.Map(indexRune, name)
	}
	return out
}

// indexRune keeps index names printable and free of the store's separator.
func indexRune(r rune) rune {
	if r < 0x21 || r == 0x7f {
		return '_'
	}
	return r
}
