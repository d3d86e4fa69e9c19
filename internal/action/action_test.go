package action_test

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/server"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
	"github.com/impersonator/impersonator/internal/token/tokentest"
)

var update = flag.Bool("update", false, "rewrite the golden answers in testdata/answers")

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const (
	authSecret = "forest-auth-secret-0123456789abcdef"
	envSecret  = "forest-env-secret-0123456789abcdefg"
	publicURL  = "https://imp.example.com"
	appURL     = "https://app.example.com"
)

type fixture struct {
	h        http.Handler
	store    *store.Store
	verifier *token.Verifier
}

// newFixture serves the whole service (server.New) on rdb, configured by
// env over a test baseline, with the clock stopped at t0.
func newFixture(t testing.TB, url string, env map[string]string, policy *action.Policy) *fixture {
	t.Helper()
	return newInstance(t, url, redistest.Prefix(), env, policy)
}

// newInstance is one instance of the service; instances with the same
// prefix on one Redis share their state, as deployed instances do.
func newInstance(t testing.TB, url, prefix string, env map[string]string, policy *action.Policy) *fixture {
	t.Helper()
	vars := map[string]string{
		"FOREST_AUTH_SECRET":      authSecret,
		"FOREST_ENV_SECRET":       envSecret,
		"IMPERSONATOR_PUBLIC_URL": publicURL,
		"IMPERSONATOR_APP_URL":    appURL,
		"IMPERSONATOR_DELIVERY":   "webhook", // the seed's answer; auto's is its own case
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(nil, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	keys := tokentest.Keyset(t, "")
	now := func() time.Time { return t0 }
	st, err := store.Open(url, store.Options{Prefix: prefix, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := server.New(server.Deps{
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Settings: server.SettingsFrom(cfg),
		Store:    st,
		Keys:     keys,
		Issuer:   token.NewIssuer(keys, cfg.PublicURL, cfg.Audience, now),
		Verifier: token.NewVerifier(keys, cfg.PublicURL, cfg.Audience, now),
		Now:      now,
		Policy:   policy,
	})
	return &fixture{h: h, store: st, verifier: token.NewVerifier(keys, cfg.PublicURL, cfg.Audience, now)}
}

// forestJWT signs Forest UI claims with secret (HS256), valid for an hour.
func forestJWT(t testing.TB, secret string, claims jwt.MapClaims) string {
	t.Helper()
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = t0.Add(time.Hour).Unix()
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nodeAdmin is what the Node agents' UI token carries (camelCase, numeric
// id); rubyAdmin the Ruby/Python agents' (snake_case, string id).
func nodeAdmin() jwt.MapClaims {
	return jwt.MapClaims{"id": 1001, "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace",
		"team": "Support", "role": "Admin", "permissionLevel": "admin", "renderingId": 7, "tags": map[string]any{}}
}

func rubyAdmin() jwt.MapClaims {
	return jwt.MapClaims{"id": "2002", "email": "grace@example.com", "first_name": "Grace", "last_name": "Hopper",
		"team": "Operations", "role": "Support", "permission_level": "user", "rendering_id": "7"}
}

var (
	ada   = audit.Actor{ID: "1001", Email: "ada@example.com", Team: "Support", Role: "Admin", Name: "Ada Lovelace", PermissionLevel: "admin"}
	grace = audit.Actor{ID: "2002", Email: "grace@example.com", Team: "Operations", Role: "Support", Name: "Grace Hopper", PermissionLevel: "user"}
	u42   = audit.Subject{Collection: "users", ID: "42"}
)

const legacyPath = "/forest/actions/impersonate"
const agentPath = "/forest/_actions/users/0/impersonate"

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// post sends body to path with the bearer JWT (none when empty).
func (f *fixture) post(path, bearer, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path+"?timezone=Europe%2FParis", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "forest-ui-test")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

func (f *fixture) events(t testing.TB) []audit.Event {
	t.Helper()
	var out []audit.Event
	err := audit.NewLog(f.store, time.Now).Range(context.Background(), "-", func(e audit.Entry) bool {
		out = append(out, e.Event)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// extractToken finds the token in an answer and returns it.
func extractToken(t *testing.T, body string) string {
	t.Helper()
	var a struct {
		Webhook struct {
			Body struct{ Token string } `json:"body"`
		} `json:"webhook"`
		RedirectTo string `json:"redirectTo"`
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, body)
	}
	if a.Webhook.Body.Token != "" {
		return a.Webhook.Body.Token
	}
	if _, frag, ok := strings.Cut(a.RedirectTo, "#token="); ok {
		return frag
	}
	return ""
}

// redirectToken returns the token in an answer's redirectTo fragment.
func redirectToken(t *testing.T, body string) string {
	t.Helper()
	var a struct {
		RedirectTo string `json:"redirectTo"`
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatal(err)
	}
	_, frag, _ := strings.Cut(a.RedirectTo, "#token=")
	return frag
}

// checkGolden compares body, with its token replaced by <token> (and a
// second, redirect credential by <redirect token>), with
// testdata/answers/name.
func checkGolden(t *testing.T, name, body, tok string) {
	t.Helper()
	got := body
	if tok != "" {
		got = strings.ReplaceAll(body, tok, "<token>")
		if r := redirectToken(t, body); r != "" && r != tok {
			got = strings.ReplaceAll(got, r, "<redirect token>")
		}
	}
	path := filepath.Join("testdata", "answers", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readTestdata(t, filepath.Join("answers", name))
	if got != want {
		t.Errorf("answer differs from %s:\ngot:  %s\nwant: %s", path, got, want)
	}
}

var ignoreVolatile = cmpopts.IgnoreFields(audit.Event{}, "ID", "RequestID")

func TestAction(t *testing.T) {
	strict := &action.Policy{
		Emails: []string{"ada@example.com"}, Collections: []string{"users"},
		Never: map[string][]string{"users": {"1"}}, MinReason: 8, Rate: config.Rate{N: 30, Per: time.Hour},
	}
	approval := func(attrs map[string]any) string {
		return forestJWT(t, envSecret, jwt.MapClaims{"data": map[string]any{"id": 5, "type": "action-requests", "attributes": attrs}, "iat": t0.Add(-time.Minute).Unix()})
	}
	approvedAttrs := map[string]any{"requester_id": 3003, "ids": []string{"42"}, "collection_name": "users",
		"smart_action_id": "users-impersonate", "values": map[string]any{"Reason": "ticket 777 approved"}, "all_records": false}
	approvalBody := func(signed string) string {
		return `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],"values":{},"smart_action_id":"users-impersonate","signed_approval_request":"` + signed + `"}}}`
	}
	denied := func(actor audit.Actor, subj audit.Subject, reason, detail string) []audit.Event {
		return []audit.Event{{Type: audit.Denied, Actor: actor, Subject: subj, Reason: reason, IP: "192.0.2.1", UserAgent: "forest-ui-test", Detail: detail, Time: t0}}
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		policy  *action.Policy
		path    string
		bearer  string
		body    string
		status  int
		golden  string
		events  []audit.Event // nil: none; minted events are checked with the token's jti
		minted  *audit.Event
		subject string
	}{
		{name: "webhook delivery, legacy path", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/legacy-users-42.json"), status: 200, golden: "webhook.json",
			minted: &audit.Event{Actor: ada, Subject: u42, Reason: "ticket 1234"}},
		{name: "auto delivery", env: map[string]string{"IMPERSONATOR_DELIVERY": "auto"}, path: legacyPath,
			bearer: forestJWT(t, authSecret, nodeAdmin()), body: readTestdata(t, "requests/legacy-users-42.json"),
			status: 200, golden: "auto.json", minted: &audit.Event{Actor: ada, Subject: u42, Reason: "ticket 1234"}},
		{name: "redirect delivery", env: map[string]string{"IMPERSONATOR_DELIVERY": "redirect"}, path: legacyPath,
			bearer: forestJWT(t, authSecret, nodeAdmin()), body: readTestdata(t, "requests/legacy-users-42.json"),
			status: 200, golden: "redirect.json", minted: &audit.Event{Actor: ada, Subject: u42, Reason: "ticket 1234"}},
		{name: "new agents' path, snake_case admin", path: agentPath, bearer: forestJWT(t, authSecret, rubyAdmin()),
			body: readTestdata(t, "requests/agent-nodejs-users-42.json"), status: 200, golden: "webhook.json",
			minted: &audit.Event{Actor: grace, Subject: u42, Reason: "ticket 1234: customer cannot see invoices"}},
		{name: "numeric id, absent and unknown attributes", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/minimal-numeric-id.json"), status: 200, golden: "webhook.json",
			minted: &audit.Event{Actor: ada, Subject: u42, Reason: "ticket 1234"}},
		{name: "approval request", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: approvalBody(approval(approvedAttrs)), status: 200, golden: "webhook.json",
			minted: &audit.Event{Actor: ada, Requester: &audit.Actor{ID: "3003"}, Subject: u42, Reason: "ticket 777 approved"}},

		{name: "no bearer", path: legacyPath, body: readTestdata(t, "requests/legacy-users-42.json"), status: 401, golden: "401.json"},
		{name: "expired bearer", path: legacyPath, bearer: forestJWT(t, authSecret, jwt.MapClaims{"id": 1, "email": "a@b.c", "exp": t0.Add(-time.Minute).Unix()}),
			body: readTestdata(t, "requests/legacy-users-42.json"), status: 401, golden: "401.json"},
		{name: "bearer without exp", path: legacyPath, bearer: forestJWT(t, authSecret, jwt.MapClaims{"id": 1, "email": "a@b.c", "exp": nil}),
			body: readTestdata(t, "requests/legacy-users-42.json"), status: 401, golden: "401.json"},
		{name: "bearer signed with another secret", path: legacyPath, bearer: forestJWT(t, "another-secret-0123456789abcdefghij", nodeAdmin()),
			body: readTestdata(t, "requests/legacy-users-42.json"), status: 401, golden: "401.json"},
		{name: "bearer with alg none", path: legacyPath, bearer: noneJWT(t, nodeAdmin()),
			body: readTestdata(t, "requests/legacy-users-42.json"), status: 401, golden: "401.json"},

		{name: "all_records selection", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/all-records.json"), status: 400, golden: "400-all-records.json",
			events: denied(ada, audit.Subject{Collection: "users"}, "", "refused: impersonation needs exactly one record; all_records selections are refused")},
		{name: "two ids", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/two-ids.json"), status: 400, golden: "400-two-ids.json",
			events: denied(ada, audit.Subject{Collection: "users"}, "", "refused: impersonation needs exactly one record, got 2 ids")},
		{name: "no reason", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/no-reason.json"), status: 400, golden: "400-no-reason.json",
			events: denied(ada, u42, "", "refused: a reason is required")},
		{name: "short reason", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/short-reason.json"), status: 400, golden: "400-short-reason.json",
			events: denied(ada, u42, "x", "refused: the reason must be at least 8 characters")},
		{name: "malformed body", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: `{"data":`, status: 400, golden: "400-malformed.json",
			events: denied(ada, audit.Subject{}, "", "refused: request body is not a Forest action request: malformed JSON")},
		{name: "path collection differs from body", path: "/forest/_actions/companies/0/impersonate", bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/legacy-users-42.json"), status: 400, golden: "400-path-mismatch.json",
			events: denied(ada, u42, "ticket 1234", `refused: collection_name "users" does not match the action path's collection "companies"`)},

		{name: "raw requester_id", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/requester-id.json"), status: 422, golden: "422.json",
			events: denied(ada, audit.Subject{Collection: "users"}, "", "refused: requester_id must not be present")},

		{name: "policy: admin not listed", policy: strict, path: legacyPath, bearer: forestJWT(t, authSecret, rubyAdmin()),
			body: readTestdata(t, "requests/legacy-users-42.json"), status: 403, golden: "403.json",
			events: denied(grace, u42, "ticket 1234", `rule admins: admin email "grace@example.com" is not in admins.emails`)},
		{name: "policy: collection not allowed", policy: strict, path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/companies-9.json"), status: 403, golden: "403.json",
			events: denied(ada, audit.Subject{Collection: "companies", ID: "9"}, "ticket 1234", `rule collections: collection "companies" is not in collections`)},
		{name: "policy: target never impersonable", policy: strict, path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body: readTestdata(t, "requests/users-1-root.json"), status: 403, golden: "403.json",
			events: denied(ada, audit.Subject{Collection: "users", ID: "1"}, "ticket 1234", "rule never: users 1 is listed in never")},
		{name: "approval with a bad signature", path: legacyPath, bearer: forestJWT(t, authSecret, nodeAdmin()),
			body:   approvalBody(forestJWT(t, "not-the-env-secret-0123456789abcdef", jwt.MapClaims{"data": map[string]any{"attributes": approvedAttrs}, "exp": t0.Add(time.Hour).Unix()})),
			status: 403, golden: "403.json",
			events: denied(ada, audit.Subject{Collection: "users"}, "", "rule approval: approval request: token signature is invalid: signature is invalid")},
		{name: "approval without FOREST_ENV_SECRET", env: map[string]string{"FOREST_ENV_SECRET": " "}, path: legacyPath,
			bearer: forestJWT(t, authSecret, nodeAdmin()), body: approvalBody(approval(approvedAttrs)), status: 403, golden: "403.json",
			events: denied(ada, audit.Subject{Collection: "users"}, "", "rule approval: approval requests are disabled: FOREST_ENV_SECRET is not set")},

		{name: "FOREST_AUTH_SECRET unset", env: map[string]string{"FOREST_AUTH_SECRET": " "}, path: legacyPath,
			bearer: forestJWT(t, authSecret, nodeAdmin()), body: readTestdata(t, "requests/legacy-users-42.json"),
			status: 503, golden: "503-not-configured.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, url := redistest.EmbeddedURL(t)
			m.SetTime(t0) // an event's time is its stream id's: the Redis server's clock
			f := newFixture(t, url, tc.env, tc.policy)
			rec := f.post(tc.path, tc.bearer, tc.body)
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tc.status, rec.Body.String())
			}
			tok := ""
			if tc.status == 200 {
				tok = extractToken(t, rec.Body.String())
			}
			checkGolden(t, tc.golden, rec.Body.String(), tok)
			want := tc.events
			if tc.minted != nil {
				c, err := f.verifier.Verify(token.Impersonation, tok)
				if err != nil {
					t.Fatalf("minted token does not verify: %v", err)
				}
				if c.Subject != tc.minted.Subject.ID || c.Collection != tc.minted.Subject.Collection || c.Act.Sub != tc.minted.Actor.ID || c.Act.Email != tc.minted.Actor.Email {
					t.Errorf("token claims sub=%q collection=%q act=%+v, want the event's subject and actor", c.Subject, c.Collection, c.Act)
				}
				if got := c.ExpiresAt.Sub(c.IssuedAt.Time); got != 60*time.Second {
					t.Errorf("token lifetime = %v, want the 60s default", got)
				}
				m := *tc.minted
				m.Type, m.TokenID, m.Time, m.Scope = audit.Minted, c.ID, t0, token.ScopeFull
				if c.Scope != token.ScopeFull {
					t.Errorf("token scope = %q, want the default %q", c.Scope, token.ScopeFull)
				}
				m.IP, m.UserAgent = "192.0.2.1", "forest-ui-test"
				m.Detail = "delivery webhook"
				switch tc.env["IMPERSONATOR_DELIVERY"] {
				case "redirect":
					m.Detail = "delivery redirect"
				case "auto":
					// The redirect credential is a second token of the same
					// grant, with its own id, single-use too.
					second := redirectToken(t, rec.Body.String())
					c2, err := f.verifier.Verify(token.Impersonation, second)
					if err != nil || c2.ID == c.ID || c2.Subject != c.Subject {
						t.Fatalf("redirect credential: %v, id %s (webhook's %s)", err, c2.ID, c.ID)
					}
					if _, st, err := f.store.Lookup(context.Background(), c2.ID); err != nil || st != store.Live {
						t.Errorf("redirect credential %s is %v (%v), want live", c2.ID, st, err)
					}
					m.Detail = "delivery auto: webhook credential " + c.ID + ", redirect credential " + c2.ID
				}
				want = []audit.Event{m}
				if _, st, err := f.store.Lookup(context.Background(), c.ID); err != nil || st != store.Live {
					t.Errorf("token id %s is %v (%v), want live in the single-use store", c.ID, st, err)
				}
			}
			got := f.events(t)
			if diff := cmp.Diff(want, got, ignoreVolatile); diff != "" {
				t.Errorf("audit events (-want +got):\n%s", diff)
			}
			for _, e := range got {
				if e.RequestID == "" || e.RequestID != rec.Header().Get("X-Request-Id") {
					t.Errorf("event request id %q, answer's X-Request-Id %q", e.RequestID, rec.Header().Get("X-Request-Id"))
				}
			}
			if tok != "" && strings.Contains(mustJSON(t, got), tok) {
				t.Error("the token itself was written to the audit log")
			}
		})
	}
}

// TestRate: the per-admin rate is counted in Redis, so it holds across two
// instances; the refusal is a 403 with a denied event naming the rule.
func TestRate(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	policy := action.DefaultPolicy()
	policy.Rate = config.Rate{N: 2, Per: time.Hour}
	prefix := redistest.Prefix()
	a := newInstance(t, url, prefix, nil, policy)
	b := newInstance(t, url, prefix, nil, policy)
	bearer := forestJWT(t, authSecret, nodeAdmin())
	body := readTestdata(t, "requests/legacy-users-42.json")
	for i, f := range []*fixture{a, b} {
		if rec := f.post(legacyPath, bearer, body); rec.Code != 200 {
			t.Fatalf("request %d: status %d, want 200", i+1, rec.Code)
		}
	}
	rec := a.post(legacyPath, bearer, body)
	if rec.Code != 403 {
		t.Fatalf("third request: status %d, want 403", rec.Code)
	}
	evs := a.events(t)
	if len(evs) != 3 {
		t.Fatalf("%d events after 2 mints and a refusal, want 3 (one denied event, not two)", len(evs))
	}
	last := evs[len(evs)-1]
	if last.Type != audit.Denied || !strings.HasPrefix(last.Detail, "rule rate: over 2/h for this admin") {
		t.Errorf("last event = %s %q, want a denied event naming the rate rule", last.Type, last.Detail)
	}
	if other := a.post(legacyPath, forestJWT(t, authSecret, rubyAdmin()), body); other.Code != 200 {
		t.Errorf("another admin: status %d, want 200 (the rate is per admin)", other.Code)
	}
}

// TestRedisDownBetweenRequests: with a real redis-server stopped between two
// requests, the action answers 503 and hands out no token; when Redis is
// back, the next request succeeds without restarting anything.
func TestRedisDownBetweenRequests(t *testing.T) {
	srv := redistest.StartServer(t)
	f := newFixture(t, srv.URL()+"?max_retries=-1&dial_timeout=200ms", nil, nil)
	bearer := forestJWT(t, authSecret, nodeAdmin())
	body := readTestdata(t, "requests/legacy-users-42.json")
	if rec := f.post(legacyPath, bearer, body); rec.Code != 200 {
		t.Fatalf("before: status %d, want 200", rec.Code)
	}
	srv.Stop()
	rec := f.post(legacyPath, bearer, body)
	if rec.Code != 503 {
		t.Fatalf("Redis down: status %d, want 503; body %s", rec.Code, rec.Body.String())
	}
	checkGolden(t, "503.json", rec.Body.String(), "")
	if strings.Contains(rec.Body.String(), "eyJ") {
		t.Error("a 503 answer carries something that looks like a JWT")
	}
	srv.Restart()
	rec = f.post(legacyPath, bearer, body)
	if rec.Code != 200 {
		t.Fatalf("Redis back: status %d, want 200; body %s", rec.Code, rec.Body.String())
	}
	tok := extractToken(t, rec.Body.String())
	c, err := f.verifier.Verify(token.Impersonation, tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, st, err := f.store.Lookup(context.Background(), c.ID); err != nil || st != store.Live {
		t.Errorf("token after recovery is %v (%v), want live", st, err)
	}
	evs := f.events(t) // the restarted server is empty: only the last mint
	if len(evs) != 1 || evs[0].Type != audit.Minted || evs[0].TokenID != c.ID {
		t.Errorf("events after recovery = %+v, want the one minted event", evs)
	}
}

func TestHooks(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	f := newFixture(t, url, nil, nil)
	for _, tc := range []struct{ path, body, golden string }{
		{legacyPath + "/hooks/load", readTestdata(t, "requests/legacy-users-42.json"), "hooks-load.json"},
		{agentPath + "/hooks/load", "", "hooks-load.json"},
		{legacyPath + "/hooks/change", readTestdata(t, "requests/hooks-change.json"), "hooks-change.json"},
		{agentPath + "/hooks/change", "not json", "hooks-load.json"},
	} {
		rec := f.post(tc.path, forestJWT(t, authSecret, nodeAdmin()), tc.body)
		if rec.Code != 200 {
			t.Errorf("%s: status %d, want 200", tc.path, rec.Code)
		}
		checkGolden(t, tc.golden, rec.Body.String(), "")
	}
	if evs := f.events(t); len(evs) != 0 {
		t.Errorf("hooks wrote %d audit events, want none (they never mint)", len(evs))
	}
}

func TestPolicyFile(t *testing.T) {
	p, err := action.LoadPolicy("../../examples/policy.yaml")
	if err != nil {
		t.Fatalf("the example policy does not load: %v", err)
	}
	if len(p.Collections) == 0 || p.MinReason < 8 {
		t.Errorf("example policy = %+v", p)
	}
	for _, tc := range []struct{ name, doc, problem string }{
		{"unknown key", "colections: [users]", "colections"},
		{"bad rate", "rate: lots", "rate"},
		{"zero reason", "min_reason_length: 0", "min_reason_length"},
		{"never outside collections", "collections: [users]\nnever: {companies: ['1']}", "never"},
		{"no collections", "collections: []", "collections"},
	} {
		if _, err := action.ParsePolicy([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.problem) {
			t.Errorf("%s: ParsePolicy = %v, want an error about %s", tc.name, err, tc.problem)
		}
	}
	j, err := action.ParsePolicy([]byte(`{"admins":{"teams":["Support"]},"collections":["users","customers"],"rate":"5/m"}`))
	if err != nil || len(j.Teams) != 1 || len(j.Collections) != 2 || j.Rate.N != 5 || j.MinReason != 8 {
		t.Errorf("JSON policy = %+v, %v", j, err)
	}
}

func noneJWT(t *testing.T, c jwt.MapClaims) string {
	c["exp"] = t0.Add(time.Hour).Unix()
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPreflight pins the preflight answer the Forest UI gets: its origin
// echoed with credentials, its headers allowed, a one-day cache and the
// Private Network Access answer; a foreign origin gets no CORS header.
func TestPreflight(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	f := newFixture(t, url, nil, nil)
	preflight := func(origin string) http.Header {
		req := httptest.NewRequest(http.MethodOptions, agentPath, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,forest-context-url")
		req.Header.Set("Access-Control-Request-Private-Network", "true")
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, req)
		return rec.Header()
	}
	h := preflight("https://acme.forestadmin.com")
	for k, want := range map[string]string{
		"Access-Control-Allow-Origin":          "https://acme.forestadmin.com",
		"Access-Control-Allow-Credentials":     "true",
		"Access-Control-Allow-Methods":         "POST",
		"Access-Control-Allow-Headers":         "authorization,content-type,forest-context-url",
		"Access-Control-Max-Age":               "86400",
		"Access-Control-Allow-Private-Network": "true",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	for k := range preflight("https://evil.example") {
		if strings.HasPrefix(k, "Access-Control-Allow") {
			t.Errorf("foreign origin got %s", k)
		}
	}
}
