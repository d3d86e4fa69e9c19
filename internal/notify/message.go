package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/impersonator/impersonator/internal/audit"
)

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// TestType is the type of the event `impersonator notify test` sends: not
// an audit event type, so a receiver can tell it from real ones.
const TestType = "impersonator.notify.test"

// Message is one event as it is delivered: the same id and bodies on
// every attempt.
type Message struct {
	// StreamID is the event's audit stream id ("" for a test message).
	StreamID string
	// ID is the event's id: the webhook-id of every attempt.
	ID   string
	Type string
	// Body is the Standard Webhooks payload:
	// {"type": ..., "timestamp": RFC 3339, "data": <the event JSON>}.
	Body []byte
	// Slack is the body sent to Slack webhooks: {"text": ...}.
	Slack []byte
}

type payload struct {
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// NewMessage builds the message of the event whose stored JSON is raw (as
// the audit stream holds it: data carries these very bytes).
func NewMessage(streamID string, raw []byte) (Message, audit.Event, error) {
	var ev audit.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Message{}, ev, fmt.Errorf("notify: event %s: %w", streamID, err)
	}
	if ev.ID == "" || !json.Valid(raw) {
		return Message{}, ev, fmt.Errorf("notify: event %s has no id", streamID)
	}
	return build(streamID, ev, raw, SlackText(ev))
}

// TestMessage is the message `impersonator notify test` sends.
func TestMessage(now time.Time) Message {
	ev := audit.Event{ID: audit.NewID(), Time: now.UTC().Truncate(time.Millisecond), Type: TestType,
		Detail: "a test notification sent by `impersonator notify test`"}
	raw, _ := json.Marshal(ev)
	m, _, _ := build("", ev, raw, "impersonator: test notification (impersonator notify test)")
	return m
}

func build(streamID string, ev audit.Event, raw []byte, text string) (Message, audit.Event, error) {
	body, err := json.Marshal(payload{Type: string(ev.Type), Timestamp: ev.Time.UTC().Format(time.RFC3339Nano), Data: raw})
	if err != nil {
		return Message{}, ev, err
	}
	slack, err := json.Marshal(struct {
		Text string `json:"text"`
	}{text})
	if err != nil {
		return Message{}, ev, err
	}
	return Message{StreamID: streamID, ID: ev.ID, Type: string(ev.Type), Body: body, Slack: slack}, ev, nil
}

// Sign returns the webhook-signature header of body sent as message id at
// unix time ts: "v1," and the base64 HMAC-SHA256, under key, of
// "id.ts.body".
func Sign(key []byte, id string, ts int64, body []byte) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(strconv.FormatInt(ts, 10)))
	h.Write([]byte{'.'})
	h.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// maxSlackField bounds each free-text field in a Slack line.
const maxSlackField = 300

// SlackText is the readable line of an event, its free text escaped as
// Slack requires (&, <, >), so no event can mention @channel or forge a
// link.
func SlackText(ev audit.Event) string {
	who := actorName(ev.Actor)
	subject := slackField(strings.TrimSpace(ev.Subject.Collection + " " + ev.Subject.ID))
	if subject == "" {
		subject = "an unknown record"
	}
	var b strings.Builder
	switch ev.Type {
	case audit.Minted:
		fmt.Fprintf(&b, "%s started impersonating %s", who, subject)
		if ev.Scope == "read" {
			b.WriteString(" (read-only)")
		}
		if ev.Requester != nil {
			fmt.Fprintf(&b, " (requested by %s)", actorName(*ev.Requester))
		}
		tail(&b, ev.Reason)
	case audit.Redeemed:
		fmt.Fprintf(&b, "%s logged in as %s", who, subject)
		tail(&b, ev.Reason)
	case audit.Denied:
		fmt.Fprintf(&b, "%s was denied impersonating %s", who, subject)
		tail(&b, ev.Detail)
	case audit.Rejected:
		fmt.Fprintf(&b, "a login as %s was rejected", subject)
		if ev.Actor.ID != "" || ev.Actor.Email != "" {
			fmt.Fprintf(&b, " (token of %s)", who)
		}
		tail(&b, ev.Detail)
	case audit.Ended:
		fmt.Fprintf(&b, "%s stopped impersonating %s", who, subject)
		tail(&b, ev.Detail)
	case audit.Revoked:
		fmt.Fprintf(&b, "%s's impersonation of %s was revoked", who, subject)
		tail(&b, ev.Detail)
	default:
		fmt.Fprintf(&b, "%s: %s, %s", slackField(string(ev.Type)), who, subject)
	}
	return b.String()
}

func tail(b *strings.Builder, s string) {
	if s = strings.TrimSpace(s); s != "" {
		b.WriteString(": ")
		b.WriteString(slackField(s))
	}
}

func actorName(a audit.Actor) string {
	switch {
	case a.Email != "":
		return slackField(a.Email)
	case a.ID != "":
		return "admin " + slackField(a.ID)
	}
	return "someone"
}

var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// slackField makes one free-text field safe for a Slack line: one line,
// bounded, escaped.
func slackField(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxSlackField {
		n := maxSlackField
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return slackEscaper.Replace(s)
}
