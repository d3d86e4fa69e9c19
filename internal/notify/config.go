// Package notify sends real-time notifications of audit events: each
// selected event is POSTed to every configured URL, signed per the
// Standard Webhooks specification, or as a readable line to a Slack
// incoming webhook.
//
// Delivery is at-least-once and off the request path: a Notifier reads the
// audit stream itself through a Redis consumer group shared by every
// instance (store/notify.go), retries each URL on the Standard Webhooks
// schedule with its state kept in Redis, claims the entries of instances
// that died, and dead-letters what finally fails. A mint or a login never
// waits on it.
package notify

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"

	"github.com/impersonator/impersonator/internal/audit"
)

// Environment variables of the configuration.
const (
	EnvURLs   = "IMPERSONATOR_NOTIFY_URLS"
	EnvSecret = "IMPERSONATOR_NOTIFY_SECRET"
	EnvEvents = "IMPERSONATOR_NOTIFY_EVENTS"
)

// SecretPrefix marks a secret written in the Standard Webhooks form:
// whsec_ then the key in standard base64.
const SecretPrefix = "whsec_"

// MinSecretLen is the shortest raw secret accepted, in characters; a
// whsec_ key must decode to at least MinKeyBytes.
const (
	MinSecretLen = 32
	MinKeyBytes  = 24
)

// slackScheme prefixes the URL of a Slack incoming webhook.
const slackScheme = "slack+"

// Target is one URL notifications go to.
type Target struct {
	// URL is where the POST goes (for Slack, without the slack+ prefix).
	// It may carry a credential (a Slack webhook's path is one): print
	// Redacted instead.
	URL string
	// Slack: a Slack incoming webhook, sent {"text": ...}, unsigned.
	Slack bool
	// ID names the URL in Redis (delivery state, dead letters): the first
	// 16 hex digits of the SHA-256 of the configured URL.
	ID string
}

// Redacted is the URL as it may be printed and logged: its scheme and host
// only (a query, user info or a Slack path may be a credential).
func (t Target) Redacted() string {
	u, err := url.Parse(t.URL)
	if err != nil {
		return "(invalid URL)"
	}
	s := u.Scheme + "://" + u.Host + "/…"
	if t.Slack {
		s = slackScheme + s
	}
	return s
}

// String is Redacted: a Target printed by mistake shows no credential.
func (t Target) String() string { return t.Redacted() }

// LogValue is Redacted.
func (t Target) LogValue() slog.Value { return slog.StringValue(t.Redacted()) }

// Key is the HMAC key of the signatures. It never prints.
type Key []byte

func (Key) String() string                 { return "[redacted]" }
func (Key) GoString() string               { return "[redacted]" }
func (Key) LogValue() slog.Value           { return slog.StringValue("[redacted]") }
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Config is the notifications' configuration.
type Config struct {
	Targets []Target
	// Key signs the non-Slack deliveries (see ParseConfig for how
	// IMPERSONATOR_NOTIFY_SECRET maps to it).
	Key Key
	// Events are the event types notified, in the audit contract's order.
	Events []audit.Type
}

// Enabled reports whether any URL is configured.
func (c Config) Enabled() bool { return len(c.Targets) > 0 }

// Selects reports whether events of type t are notified.
func (c Config) Selects(t audit.Type) bool { return slices.Contains(c.Events, t) }

// ParseConfig reads the three variables' values and lists every problem:
//
//   - urls (IMPERSONATOR_NOTIFY_URLS): comma-separated http:// or https://
//     URLs; one written slack+https:// (or slack+http://) is a Slack incoming
//     webhook. Empty: notifications are off.
//   - secret (IMPERSONATOR_NOTIFY_SECRET): the signing secret, required when
//     any URL is not a Slack one. A value starting whsec_ is the Standard
//     Webhooks form: the rest is the key in standard base64, at least 24
//     bytes (32 base64 characters); the receiver configures the same
//     whsec_ string. Any other value is used as it is: its UTF-8 bytes are
//     the HMAC key, at least 32 characters (a receiver using a Standard
//     Webhooks library gives it those raw bytes, e.g. Go's
//     standardwebhooks.NewWebhookRaw, or "whsec_" + base64 of them).
//   - events (IMPERSONATOR_NOTIFY_EVENTS): comma-separated audit event
//     types; empty: every type.
//
// No message repeats a URL or the secret.
func ParseConfig(urls, secret, events string) (Config, []error) {
	var c Config
	var errs []error
	needKey := false
	seen := map[string]bool{}
	for i, raw := range strings.Split(urls, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		t, err := parseTarget(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: URL %d: %w", EnvURLs, i+1, err))
			continue
		}
		if seen[t.ID] {
			errs = append(errs, fmt.Errorf("%s: URL %d is listed twice", EnvURLs, i+1))
			continue
		}
		seen[t.ID] = true
		needKey = needKey || !t.Slack
		c.Targets = append(c.Targets, t)
	}
	if secret != "" {
		k, err := parseSecret(secret)
		if err != nil {
			errs = append(errs, err)
		}
		c.Key = k
	} else if needKey {
		errs = append(errs, fmt.Errorf("%s is required with a non-Slack URL in %s: at least %d characters (or whsec_ and a base64 key of %d bytes or more)", EnvSecret, EnvURLs, MinSecretLen, MinKeyBytes))
	}
	c.Events, errs = parseEvents(events, errs)
	return c, errs
}

func parseTarget(raw string) (Target, error) {
	t := Target{ID: targetID(raw)}
	u, err := url.Parse(raw)
	if err != nil {
		return t, errors.New("not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if s, ok := strings.CutPrefix(scheme, slackScheme); ok {
		t.Slack = true
		scheme = s
	}
	if scheme != "http" && scheme != "https" {
		return t, fmt.Errorf("scheme %q: want http, https, or slack+https for a Slack webhook", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return t, errors.New("no host")
	}
	if u.Fragment != "" {
		return t, errors.New("a fragment (#) is never sent")
	}
	u.Scheme = scheme
	t.URL = u.String()
	return t, nil
}

// targetID names a URL in Redis without revealing it.
func targetID(raw string) string {
	h := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(h[:8])
}

func parseSecret(secret string) (Key, error) {
	if b64, ok := strings.CutPrefix(secret, SecretPrefix); ok {
		k, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("%s: the part after %s is not standard base64", EnvSecret, SecretPrefix)
		}
		if len(k) < MinKeyBytes {
			return nil, fmt.Errorf("%s: a %s key must be at least %d bytes, got %d", EnvSecret, SecretPrefix, MinKeyBytes, len(k))
		}
		return Key(k), nil
	}
	if n := len([]rune(secret)); n < MinSecretLen {
		return nil, fmt.Errorf("%s must be at least %d characters, got %d", EnvSecret, MinSecretLen, n)
	}
	return Key(secret), nil
}

func parseEvents(events string, errs []error) ([]audit.Type, []error) {
	if strings.TrimSpace(events) == "" {
		return slices.Clone(audit.Types), errs
	}
	want := map[audit.Type]bool{}
	for _, name := range strings.Split(events, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		t := audit.Type(name)
		if !t.Valid() {
			names := make([]string, len(audit.Types))
			for i, k := range audit.Types {
				names[i] = string(k)
			}
			errs = append(errs, fmt.Errorf("%s: unknown event type %q (known: %s)", EnvEvents, name, strings.Join(names, ", ")))
			continue
		}
		want[t] = true
	}
	var out []audit.Type
	for _, t := range audit.Types {
		if want[t] {
			out = append(out, t)
		}
	}
	if len(want) == 0 {
		return slices.Clone(audit.Types), errs // only blanks: the default
	}
	return out, errs
}
