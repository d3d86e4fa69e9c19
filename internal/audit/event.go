// Package audit defines the audit events of impersonator: who impersonated
// whom, when, why, from where, and what happened.
package audit

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"time"
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
)

// Types lists every event type, in the order of the contract.
var Types = []Type{Minted, Denied, Redeemed, Rejected, Ended, Revoked}

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
	TokenID   string    `json:"token_id,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	IP        string    `json:"ip,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	Detail    string    `json:"detail,omitempty"`
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
