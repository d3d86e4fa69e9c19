package notify_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/notify"
)

var (
	newWebhook    = standardwebhooks.NewWebhook
	newWebhookRaw = standardwebhooks.NewWebhookRaw
)

const rawSecret = "a-raw-secret-of-thirty-two-chars-or-more"

// TestParseConfig: every rule of the three variables, and that no message
// repeats a URL or the secret.
func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, urls, secret, events string
		wantErr                    []string // substrings, one per error
		check                      func(t *testing.T, c notify.Config)
	}{
		{name: "off", check: func(t *testing.T, c notify.Config) {
			if c.Enabled() || len(c.Events) != len(audit.Types) {
				t.Errorf("empty config: %+v", c)
			}
		}},
		{name: "webhook and slack", urls: " https://hooks.example.com/a?token=q , slack+https://hooks.slack.com/services/T/B/X ,", secret: rawSecret,
			check: func(t *testing.T, c notify.Config) {
				if len(c.Targets) != 2 || c.Targets[0].Slack || !c.Targets[1].Slack {
					t.Fatalf("targets %+v", c.Targets)
				}
				if c.Targets[1].URL != "https://hooks.slack.com/services/T/B/X" || c.Targets[0].URL != "https://hooks.example.com/a?token=q" {
					t.Errorf("URLs %q %q", c.Targets[0].URL, c.Targets[1].URL)
				}
				if got := c.Targets[1].Redacted(); got != "slack+https://hooks.slack.com/…" {
					t.Errorf("Redacted = %q", got)
				}
				if c.Targets[0].ID == c.Targets[1].ID || len(c.Targets[0].ID) != 16 {
					t.Errorf("ids %q %q", c.Targets[0].ID, c.Targets[1].ID)
				}
				if string(c.Key) != rawSecret {
					t.Error("a raw secret is not used as it is")
				}
				for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c.Key), slogText(c)} {
					if strings.Contains(s, "token=q") || strings.Contains(s, "/X") || strings.Contains(s, rawSecret) {
						t.Errorf("a printed Config shows a credential: %s", s)
					}
				}
			}},
		{name: "slack only needs no secret", urls: "slack+https://hooks.slack.com/services/T/B/X"},
		{name: "whsec", urls: "http://127.0.0.1:9/x", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", check: func(t *testing.T, c notify.Config) {
			if len(c.Key) != 24 {
				t.Errorf("a whsec_ key decodes to %d bytes, want 24", len(c.Key))
			}
		}},
		{name: "events", urls: "https://h.example.com", secret: rawSecret, events: "session.revoked, impersonation.minted", check: func(t *testing.T, c notify.Config) {
			if fmt.Sprint(c.Events) != "[impersonation.minted session.revoked]" || c.Selects(audit.Denied) || !c.Selects(audit.Revoked) {
				t.Errorf("events %v", c.Events)
			}
		}},
		{name: "secret required", urls: "https://h.example.com", wantErr: []string{"IMPERSONATOR_NOTIFY_SECRET is required"}},
		{name: "short secret", urls: "https://h.example.com", secret: "short-secret-0123456789", wantErr: []string{"at least 32 characters, got 23"}},
		{name: "short whsec", urls: "https://h.example.com", secret: "whsec_c2hvcnQ=", wantErr: []string{"at least 24 bytes, got 5"}},
		{name: "bad whsec", urls: "https://h.example.com", secret: "whsec_not base64!!", wantErr: []string{"not standard base64"}},
		{name: "bad URLs", urls: "ftp://x.example.com/secret-path, https://, slack+ftp://h/x, https://dup.example.com, https://dup.example.com, http://h/#frag", secret: rawSecret,
			wantErr: []string{"URL 1: scheme \"ftp\"", "URL 2: no host", "URL 3: scheme", "URL 5 is listed twice", "URL 6: a fragment"}},
		{name: "unknown event", events: "impersonation.minted,impersonation.bogus", wantErr: []string{`unknown event type "impersonation.bogus"`}},
		{name: "no event", events: " , ", check: func(t *testing.T, c notify.Config) {
			if len(c.Events) != len(audit.Types) {
				t.Errorf("blank list = %v, want every type", c.Events)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, errs := notify.ParseConfig(tt.urls, tt.secret, tt.events)
			if len(errs) != len(tt.wantErr) {
				t.Fatalf("errors %v, want %d: %q", errs, len(tt.wantErr), tt.wantErr)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tt.wantErr[i]) {
					t.Errorf("error %d = %q, want it to say %q", i, e, tt.wantErr[i])
				}
				if strings.Contains(e.Error(), "secret-path") || (tt.secret != "" && strings.Contains(e.Error(), tt.secret)) {
					t.Errorf("error %q repeats a URL or the secret", e)
				}
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func slogText(v any) string {
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "config", v)
	return b.String()
}

// TestSlackText: one readable line per event type; the free text cannot
// mention @channel, forge a link or break the line.
func TestSlackText(t *testing.T) {
	ada := audit.Actor{ID: "1001", Email: "ada@example.com"}
	users42 := audit.Subject{Collection: "users", ID: "42"}
	tests := []struct {
		ev   audit.Event
		want string
	}{
		{audit.Event{Type: audit.Minted, Actor: ada, Subject: users42, Reason: "ticket 1234"},
			"ada@example.com started impersonating users 42: ticket 1234"},
		{audit.Event{Type: audit.Minted, Actor: ada, Subject: users42, Reason: "ticket 1234", Scope: "read"},
			"ada@example.com started impersonating users 42 (read-only): ticket 1234"},
		{audit.Event{Type: audit.Minted, Actor: ada, Requester: &audit.Actor{ID: "7"}, Subject: users42, Reason: "ticket 1234"},
			"ada@example.com started impersonating users 42 (requested by admin 7): ticket 1234"},
		{audit.Event{Type: audit.Redeemed, Actor: ada, Subject: users42, Reason: "ticket 1234"},
			"ada@example.com logged in as users 42: ticket 1234"},
		{audit.Event{Type: audit.Denied, Actor: audit.Actor{ID: "1001"}, Subject: users42, Detail: "rate"},
			"admin 1001 was denied impersonating users 42: rate"},
		{audit.Event{Type: audit.Rejected, Subject: users42, Detail: "token already used"},
			"a login as users 42 was rejected: token already used"},
		{audit.Event{Type: audit.Rejected, Actor: ada, Detail: "expired"},
			"a login as an unknown record was rejected (token of ada@example.com): expired"},
		{audit.Event{Type: audit.Ended, Actor: ada, Subject: users42, Detail: "logout"},
			"ada@example.com stopped impersonating users 42: logout"},
		{audit.Event{Type: audit.Revoked, Actor: ada, Subject: users42, Detail: "revoked by bob"},
			"ada@example.com's impersonation of users 42 was revoked: revoked by bob"},
		{audit.Event{Type: audit.Minted, Actor: audit.Actor{Email: "<!channel>&co"}, Subject: audit.Subject{Collection: "users", ID: "<http://evil|x>"},
			Reason: "a\nb <@U123> & c"},
			"&lt;!channel&gt;&amp;co started impersonating users &lt;http://evil|x&gt;: a b &lt;@U123&gt; &amp; c"},
	}
	for _, tt := range tests {
		if got := notify.SlackText(tt.ev); got != tt.want {
			t.Errorf("SlackText(%s) = %q\nwant %q", tt.ev.Type, got, tt.want)
		}
	}
	long := notify.SlackText(audit.Event{Type: audit.Minted, Actor: ada, Subject: users42, Reason: strings.Repeat("é", 400)})
	if len(long) > 400 || !strings.HasSuffix(long, "…") {
		t.Errorf("a long reason is not cut: %d bytes", len(long))
	}
}
