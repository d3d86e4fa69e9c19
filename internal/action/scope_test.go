package action_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

func mustPolicy(t *testing.T, doc string) *action.Policy {
	t.Helper()
	p, err := action.ParsePolicy([]byte(doc))
	if err != nil {
		t.Fatalf("policy %q: %v", doc, err)
	}
	return p
}

// accessBody is the legacy request with values' Access set (raw JSON, or
// left out when empty).
func accessBody(access string) string {
	values := `"Reason":"ticket 1234"`
	if access != "" {
		values += `,"Access":` + access
	}
	return `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],"values":{` + values + `},"smart_action_id":"users-impersonate"}}}`
}

// TestAccess: the scope an admin may choose and gets, on a real
// redis-server: the policy's default, read only for anyone, full access only
// for full_access admins (403 rule full_access otherwise), an unknown
// choice 400. The token, the grant and the minted event carry the scope.
func TestAccess(t *testing.T) {
	srv := redistest.StartServer(t)
	fullForAda := "full_access: {emails: [ada@example.com]}\ndefault_access: read\n"
	fullDefault := "full_access: {teams: [Support]}\n"
	for _, tc := range []struct {
		name, policy, access string
		admin                jwt.MapClaims
		status               int
		golden               string
		scope                string // of the minted token, when 200
		denied               string // the denied event's detail, when refused
	}{
		{name: "no policy, no choice: full", access: "", admin: nodeAdmin(), status: 200, golden: "webhook.json", scope: "full"},
		{name: "no policy, read only", access: `"Read only"`, admin: nodeAdmin(), status: 200, golden: "webhook.json", scope: "read"},
		{name: "no policy, full access", access: `"Full access"`, admin: rubyAdmin(), status: 200, golden: "webhook.json", scope: "full"},
		{name: "null is no choice", access: `null`, admin: nodeAdmin(), status: 200, golden: "webhook.json", scope: "full"},
		{name: "default_access read", policy: fullForAda, access: "", admin: rubyAdmin(), status: 200, golden: "webhook.json", scope: "read"},
		{name: "full_access admin chooses full", policy: fullForAda, access: `"Full access"`, admin: nodeAdmin(), status: 200, golden: "webhook.json", scope: "full"},
		{name: "other admin chooses full", policy: fullForAda, access: `"Full access"`, admin: rubyAdmin(), status: 403, golden: "403.json",
			denied: `rule full_access: admin email "grace@example.com" is not in full_access.emails: full access refused`},
		{name: "other admin gets the default full", policy: fullDefault, access: "", admin: rubyAdmin(), status: 403, golden: "403.json",
			denied: `rule full_access: admin team "Operations" is not in full_access.teams: full access refused`},
		{name: "other admin chooses read only", policy: fullDefault, access: `"Read only"`, admin: rubyAdmin(), status: 200, golden: "webhook.json", scope: "read"},
		{name: "unknown choice", access: `"read"`, admin: nodeAdmin(), status: 400, golden: "400-access.json",
			denied: `refused: Access must be "Read only" or "Full access"`},
		{name: "not text", access: `1`, admin: nodeAdmin(), status: 400, golden: "400-access.json",
			denied: `refused: Access must be "Read only" or "Full access"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var policy *action.Policy
			if tc.policy != "" {
				policy = mustPolicy(t, tc.policy)
			}
			f := newFixture(t, srv.URL(), nil, policy)
			rec := f.post(legacyPath, forestJWT(t, authSecret, tc.admin), accessBody(tc.access))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body.String())
			}
			tok := ""
			if rec.Code == 200 {
				tok = extractToken(t, rec.Body.String())
			}
			checkGolden(t, tc.golden, rec.Body.String(), tok)
			evs := f.events(t)
			if len(evs) != 1 {
				t.Fatalf("%d events, want 1", len(evs))
			}
			if tc.status != 200 {
				if evs[0].Type != audit.Denied || evs[0].Detail != tc.denied || evs[0].Scope != "" {
					t.Errorf("event %s %q (scope %q), want denied %q", evs[0].Type, evs[0].Detail, evs[0].Scope, tc.denied)
				}
				return
			}
			c, err := f.verifier.Verify(token.Impersonation, tok)
			if err != nil || c.Scope != tc.scope {
				t.Fatalf("token scope %q (%v), want %q", c.Scope, err, tc.scope)
			}
			g, _, err := f.store.Lookup(context.Background(), c.ID)
			if err != nil || g.Scope != tc.scope || evs[0].Scope != tc.scope {
				t.Errorf("grant scope %q, minted event scope %q (%v), want %q", g.Scope, evs[0].Scope, err, tc.scope)
			}
		})
	}
}

// TestHooksAccess: with default_access or full_access in the policy, the
// form gains the required Access choice with the policy's default; the
// change hook echoes a valid choice and drops an invalid one. Without them
// the form is the Reason alone (TestHooks' goldens).
func TestHooksAccess(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	f := newFixture(t, url, nil, mustPolicy(t, "default_access: read\n"))
	changed := `{"data":{"type":"custom-action-hook-requests","attributes":{"collection_name":"users","ids":["42"],"fields":[` +
		`{"field":"Reason","type":"String","value":"ticket 12","isRequired":true},{"field":"Access","type":"Enum","value":"Full access"}],` +
		`"changed_field":"Access","smart_action_id":"users-impersonate"}}}`
	for _, tc := range []struct{ path, body, golden string }{
		{legacyPath + "/hooks/load", readTestdata(t, "requests/legacy-users-42.json"), "hooks-load-access.json"},
		{agentPath + "/hooks/load", "", "hooks-load-access.json"},
		{legacyPath + "/hooks/change", changed, "hooks-change-access.json"},
		{agentPath + "/hooks/change", strings.Replace(changed, `"value":"Full access"`, `"value":"root"`, 1), "hooks-change-access-invalid.json"},
	} {
		rec := f.post(tc.path, forestJWT(t, authSecret, nodeAdmin()), tc.body)
		if rec.Code != 200 {
			t.Errorf("%s: status %d", tc.path, rec.Code)
		}
		checkGolden(t, tc.golden, rec.Body.String(), "")
	}
	if evs := f.events(t); len(evs) != 0 {
		t.Errorf("hooks wrote %d events", len(evs))
	}
	full := newFixture(t, url, nil, mustPolicy(t, "full_access: {roles: [Admin]}\n"))
	if rec := full.post(legacyPath+"/hooks/load", forestJWT(t, authSecret, nodeAdmin()), ""); !strings.Contains(rec.Body.String(), `"defaultValue":"Full access"`) {
		t.Errorf("full_access alone: the form's default is not Full access: %s", rec.Body.String())
	}
}

// TestConsentRequired: a collection under require_consent is refused (403,
// rule consent, its denied event) until the record has an active consent,
// checked in the reservation's own step.
func TestConsentRequired(t *testing.T) {
	srv := redistest.StartServer(t)
	f := newFixture(t, srv.URL(), nil, mustPolicy(t, "require_consent: [users]\n"))
	body := readTestdata(t, "requests/legacy-users-42.json")
	bearer := forestJWT(t, authSecret, nodeAdmin())
	rec := f.post(legacyPath, bearer, body)
	if rec.Code != 403 {
		t.Fatalf("without consent: %d, want 403", rec.Code)
	}
	checkGolden(t, "403.json", rec.Body.String(), "")
	want := []audit.Event{{Type: audit.Denied, Actor: ada, Subject: u42, Reason: "ticket 1234", IP: "192.0.2.1", UserAgent: "forest-ui-test",
		Detail: "rule consent: users 42 has no active consent from the customer"}}
	// The time is the real redis-server's (TestAuditOneClock).
	if diff := cmp.Diff(want, f.events(t), ignoreVolatile, cmpopts.IgnoreFields(audit.Event{}, "Time")); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	granted, _ := (audit.Encoder{Now: func() time.Time { return t0 }}).Encode(audit.Event{Type: audit.ConsentGranted, Subject: u42})
	if err := f.store.GrantConsent(context.Background(), store.Consent{Subject: u42, Until: t0.Add(time.Hour)}, granted); err != nil {
		t.Fatal(err)
	}
	if rec := f.post(legacyPath, bearer, body); rec.Code != 200 {
		t.Fatalf("with consent: %d %s", rec.Code, rec.Body.String())
	}
	other := strings.Replace(body, `"42"`, `"43"`, 1)
	if rec := f.post(legacyPath, bearer, other); rec.Code != 403 {
		t.Errorf("another record of the collection: %d, want 403", rec.Code)
	}
}

// TestPolicyScopeKeys: the new keys parse, and senseless values are
// problems listed with the others.
func TestPolicyScopeKeys(t *testing.T) {
	p := mustPolicy(t, "collections: [users, companies]\ndefault_access: read\nfull_access:\n  emails: [Ada@Example.com]\n  teams: [Support]\nrequire_consent: [companies]\n")
	if p.DefaultAccess != "read" || p.FullAccess == nil || p.FullAccess.Emails[0] != "ada@example.com" || !p.ShowsAccess() ||
		len(p.RequireConsent) != 1 {
		t.Errorf("policy = %+v", p)
	}
	if action.DefaultPolicy().ShowsAccess() || mustPolicy(t, "rate: 5/m").ShowsAccess() {
		t.Error("a policy without default_access or full_access shows the Access field")
	}
	for _, tc := range []struct{ name, doc, problem string }{
		{"bad default_access", "default_access: write", "default_access"},
		{"empty full_access", "full_access: {}", "full_access"},
		{"unknown full_access key", "full_access: {groups: [x]}", "groups"},
		{"consent outside collections", "require_consent: [companies]", "require_consent"},
	} {
		if _, err := action.ParsePolicy([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.problem) {
			t.Errorf("%s: ParsePolicy = %v, want an error about %s", tc.name, err, tc.problem)
		}
	}
}

// TestRefuses: how a reloaded policy judges a live session, rule by rule.
func TestRefuses(t *testing.T) {
	sess := func(id, scope string, a audit.Actor) store.Session {
		return store.Session{ID: "s", Actor: a, Subject: audit.Subject{Collection: "users", ID: id}, Scope: scope}
	}
	for _, tc := range []struct {
		name, policy string
		sess         store.Session
		consent      bool
		rule         string
	}{
		{"allowed", "collections: [users]", sess("42", "full", ada), false, ""},
		{"admin removed", "admins: {emails: [grace@example.com]}", sess("42", "full", ada), false, "admins"},
		{"permission level", "admins: {permission_levels: [user]}", sess("42", "full", ada), false, "admins"},
		{"collection removed", "collections: [companies]", sess("42", "full", ada), false, "collections"},
		{"record never", "never: {users: ['42']}", sess("42", "full", ada), false, "never"},
		{"never by leading integer", "never: {users: ['42']}", sess("42-ada", "full", ada), false, "never"},
		{"full access withdrawn", "full_access: {teams: [Operations]}", sess("42", "full", ada), false, "full_access"},
		{"scope of before scopes is full", "full_access: {teams: [Operations]}", sess("42", "", ada), false, "full_access"},
		{"read only is kept", "full_access: {teams: [Operations]}", sess("42", "read", ada), false, ""},
		{"consent required, none", "require_consent: [users]", sess("42", "read", ada), false, "consent"},
		{"consent required, given", "require_consent: [users]", sess("42", "read", ada), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rule, detail, err := mustPolicy(t, tc.policy).Refuses(tc.sess, func() (bool, error) { return tc.consent, nil })
			if err != nil || rule != tc.rule {
				t.Errorf("Refuses = %q (%s), %v; want rule %q", rule, detail, err, tc.rule)
			}
		})
	}
}
