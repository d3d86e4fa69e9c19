package server

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
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
	"github.com/impersonator/impersonator/internal/token/tokentest"
)

// The extensions of issue 14 end to end, on a real redis-server: read-only
// impersonation, customer consent and the customer's history.

var update = flag.Bool("update", false, "rewrite the golden answers in testdata/answers")

const (
	featForestSecret = "features-forest-secret-0123456789abcdefghijk"
	featAdminToken   = "features-admin-token-0123456789abcdefghijk"
)

// deployment is one instance on a real Redis, with a clock the test moves.
type deployment struct {
	t    *testing.T
	h    http.Handler
	st   *store.Store
	keys *token.Keyset
	cfg  *config.Config
	srv  *redistest.Server
	mu   sync.Mutex
	now  time.Time
}

func newDeployment(t *testing.T, policy *action.Policy, opts ...func(*deployment, *Deps)) *deployment {
	t.Helper()
	srv := redistest.StartServer(t)
	vars := map[string]string{
		"FOREST_AUTH_SECRET":        featForestSecret,
		"IMPERSONATOR_ADMIN_TOKENS": featAdminToken,
		"IMPERSONATOR_PUBLIC_URL":   "http://imp.test",
		"IMPERSONATOR_APP_URL":      "http://app.test",
		"IMPERSONATOR_DELIVERY":     "webhook",
	}
	cfg, err := config.Load(nil, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{t: t, keys: tokentest.Keyset(t, ""), cfg: cfg, now: t0, srv: srv}
	d.st, err = store.Open(srv.URL(), store.Options{Prefix: redistest.Prefix(), Now: d.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.st.Close() })
	deps := Deps{
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Settings: SettingsFrom(cfg),
		Store:    d.st,
		Keys:     d.keys,
		Issuer:   token.NewIssuer(d.keys, cfg.PublicURL, cfg.Audience, d.clock),
		Verifier: token.NewVerifier(d.keys, cfg.PublicURL, cfg.Audience, d.clock),
		Now:      d.clock,
		Policy:   policy,
	}
	for _, o := range opts {
		o(d, &deps)
	}
	d.h = New(deps)
	return d
}

func (d *deployment) clock() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}

func (d *deployment) advance(by time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.now = d.now.Add(by)
}

var (
	featAda   = jwt.MapClaims{"id": 1001, "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "team": "Support", "role": "Admin", "permissionLevel": "admin"}
	featGrace = jwt.MapClaims{"id": "2002", "email": "grace@example.com", "first_name": "Grace", "last_name": "Hopper", "team": "Operations", "role": "Support", "permission_level": "user"}
	adaActor  = audit.Actor{ID: "1001", Email: "ada@example.com", Team: "Support", Role: "Admin", Name: "Ada Lovelace", PermissionLevel: "admin"}
)

// do sends a request to the instance.
func (d *deployment) do(method, path, body string, hdr map[string]string, c *http.Cookie) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("User-Agent", "features-test")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if c != nil {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	d.h.ServeHTTP(rec, req)
	return rec
}

// mint runs the Forest action as admin on collection/id with reason and,
// when not empty, the Access value.
func (d *deployment) mint(admin jwt.MapClaims, collection, id, reason, access string) *httptest.ResponseRecorder {
	d.t.Helper()
	claims := jwt.MapClaims{"exp": d.clock().Add(time.Hour).Unix()}
	for k, v := range admin {
		claims[k] = v
	}
	bearer, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(featForestSecret))
	if err != nil {
		d.t.Fatal(err)
	}
	values := map[string]any{"Reason": reason}
	if access != "" {
		values["Access"] = access
	}
	body, _ := json.Marshal(map[string]any{"data": map[string]any{"type": "custom-action-requests", "attributes": map[string]any{
		"collection_name": collection, "ids": []string{id}, "values": values, "smart_action_id": collection + "-impersonate"}}})
	return d.do(http.MethodPost, "/forest/actions/impersonate", string(body), map[string]string{"Authorization": "Bearer " + bearer}, nil)
}

// impersonate mints and logs in, and returns the session cookie.
func (d *deployment) impersonate(admin jwt.MapClaims, collection, id, reason, access string) *http.Cookie {
	d.t.Helper()
	rec := d.mint(admin, collection, id, reason, access)
	if rec.Code != 200 {
		d.t.Fatalf("mint: %d %s", rec.Code, rec.Body.String())
	}
	c, lrec := d.login(webhookToken(d.t, rec.Body.String()))
	if c == nil {
		d.t.Fatalf("login: %d %s", lrec.Code, lrec.Body.String())
	}
	// The customer app sees the session (else webhook delivery ends it
	// as never used).
	if s := d.do(http.MethodGet, "/impersonation/session", "", nil, c); s.Code != 200 {
		d.t.Fatalf("session: %d", s.Code)
	}
	return c
}

func webhookToken(t *testing.T, body string) string {
	t.Helper()
	var a struct {
		Webhook struct {
			Body struct{ Token string } `json:"body"`
		} `json:"webhook"`
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil || a.Webhook.Body.Token == "" {
		t.Fatalf("no webhook token in %s", body)
	}
	return a.Webhook.Body.Token
}

func (d *deployment) login(tok string) (*http.Cookie, *httptest.ResponseRecorder) {
	rec := d.do(http.MethodPost, "/impersonation/login", `{"token":"`+tok+`"}`, nil, nil)
	for _, c := range rec.Result().Cookies() {
		if strings.HasSuffix(c.Name, "impersonation_session") && c.Value != "" {
			return c, rec
		}
	}
	return nil, rec
}

func (d *deployment) admin(method, path, body string) *httptest.ResponseRecorder {
	return d.do(method, path, body, map[string]string{"Authorization": "Bearer " + featAdminToken}, nil)
}

func (d *deployment) events() []audit.Event {
	d.t.Helper()
	var out []audit.Event
	err := audit.NewLog(d.st, d.clock).Range(context.Background(), "-", func(e audit.Entry) bool {
		out = append(out, e.Event)
		return true
	})
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// eventsIgnore leaves out what each run draws anew.
var eventsIgnore = cmpopts.IgnoreFields(audit.Event{}, "ID", "RequestID", "TokenID", "SessionID", "Time")

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "answers", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("answer differs from %s:\ngot:  %s\nwant: %s", path, got, want)
	}
}

// TestReadOnlyImpersonation: a read-only impersonation end to end. The
// token and the session carry scope read; the session JSON says so, the
// forward-auth header too, and every event of the impersonation (minted,
// redeemed, the replay's rejection, the logout's end) has scope read.
func TestReadOnlyImpersonation(t *testing.T) {
	d := newDeployment(t, nil)
	rec := d.mint(featAda, "users", "42", "ticket 1234: read the invoices", "Read only")
	if rec.Code != 200 {
		t.Fatalf("mint: %d %s", rec.Code, rec.Body.String())
	}
	tok := webhookToken(t, rec.Body.String())
	verifier := token.NewVerifier(d.keys, d.cfg.PublicURL, d.cfg.Audience, d.clock)
	if c, err := verifier.Verify(token.Impersonation, tok); err != nil || c.Scope != token.ScopeRead {
		t.Fatalf("impersonation token: scope %v, %v; want read", c, err)
	}
	cookie, lrec := d.login(tok)
	if cookie == nil {
		t.Fatalf("login: %d %s", lrec.Code, lrec.Body.String())
	}
	if c, err := verifier.Verify(token.Session, cookie.Value); err != nil || c.Scope != token.ScopeRead {
		t.Errorf("session token: %v, %v; want scope read", c, err)
	}
	srec := d.do(http.MethodGet, "/impersonation/session", "", nil, cookie)
	if srec.Code != 200 {
		t.Fatalf("session: %d %s", srec.Code, srec.Body.String())
	}
	if got := srec.Header().Get("X-Impersonation-Scope"); got != "read" {
		t.Errorf("X-Impersonation-Scope = %q, want read", got)
	}
	var sess map[string]any
	if err := json.Unmarshal(srec.Body.Bytes(), &sess); err != nil || sess["scope"] != "read" {
		t.Errorf("session JSON %s: scope %v, want read", srec.Body.String(), sess["scope"])
	}
	for method, want := range map[string]int{"GET": 200, "HEAD": 200, "OPTIONS": 200, "POST": 403, "PUT": 403, "PATCH": 403, "DELETE": 403, "PROPFIND": 403} {
		if rec := d.do(http.MethodGet, "/impersonation/session", "", map[string]string{"X-Forwarded-Method": method}, cookie); rec.Code != want {
			t.Errorf("forward-auth of %s under read only: %d, want %d", method, rec.Code, want)
		}
	}
	if _, rrec := d.login(tok); rrec.Code != 401 {
		t.Errorf("replay: %d, want 401", rrec.Code)
	}
	if lo := d.do(http.MethodPost, "/impersonation/logout", "", nil, cookie); lo.Code != 204 {
		t.Errorf("logout: %d", lo.Code)
	}
	ev := func(typ audit.Type, detail string) audit.Event {
		return audit.Event{Type: typ, Actor: adaActor, Subject: audit.Subject{Collection: "users", ID: "42"},
			Reason: "ticket 1234: read the invoices", Scope: "read", IP: "192.0.2.1", UserAgent: "features-test", Detail: detail}
	}
	want := []audit.Event{ev(audit.Minted, "delivery webhook"), ev(audit.Redeemed, ""),
		ev(audit.Rejected, "replayed: token already redeemed"), ev(audit.Ended, "logout")}
	if diff := cmp.Diff(want, d.events(), eventsIgnore); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if after := d.do(http.MethodGet, "/impersonation/session", "", nil, cookie); after.Code != 401 {
		t.Errorf("session after logout: %d, want 401", after.Code)
	}
}

// TestConsent: the consent API's validation, a mint refused without consent
// and allowed with it, and a withdrawal that revokes the live session and
// voids a token minted under the consent, with the events in order.
func TestConsent(t *testing.T) {
	policy := action.DefaultPolicy()
	policy.RequireConsent = []string{"users"}
	d := newDeployment(t, policy)
	const path = "/v1/consents/users/42"
	until := t0.Add(7 * 24 * time.Hour).Format(time.RFC3339)

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		has                      string
	}{
		{"no consent yet", "GET", path, "", 404, "no active consent"},
		{"withdraw nothing", "DELETE", path, "", 404, "no active consent"},
		{"until missing", "PUT", path, `{"note":"call 17"}`, 400, "until is required"},
		{"until not RFC 3339", "PUT", path, `{"until":"tomorrow"}`, 400, "not an RFC 3339 time"},
		{"until in the past", "PUT", path, `{"until":"2026-11-24T10:00:00Z"}`, 400, "in the future"},
		{"until beyond 30 days", "PUT", path, `{"until":"2026-12-25T10:00:01Z"}`, 400, "at most 30 days ahead"},
		{"note too long", "PUT", path, `{"until":"` + until + `","note":"` + strings.Repeat("n", 501) + `"}`, 400, "at most 500 bytes"},
		{"note with a control character", "PUT", path, `{"until":"` + until + `","note":"a\u001bb"}`, 400, "control character"},
		{"note with a bidi override", "PUT", path, `{"until":"` + until + `","note":"a\u202eb"}`, 400, "bidirectional"},
		{"unknown field", "PUT", path, `{"until":"` + until + `","by":"me"}`, 400, ""},
		{"non-canonical id", "PUT", "/v1/consents/users/042", `{"until":"` + until + `"}`, 400, "id:"},
		{"bad collection", "PUT", "/v1/consents/us%20ers/42", `{"until":"` + until + `"}`, 400, "collection"},
		{"no admin token", "PUT-noauth", path, `{"until":"` + until + `"}`, 401, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec *httptest.ResponseRecorder
			if tc.method == "PUT-noauth" {
				rec = d.do("PUT", tc.path, tc.body, nil, nil)
			} else {
				rec = d.admin(tc.method, tc.path, tc.body)
			}
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.has) {
				t.Errorf("%s %s: %d %s, want %d containing %q", tc.method, tc.path, rec.Code, rec.Body.String(), tc.status, tc.has)
			}
		})
	}
	if evs := d.events(); len(evs) != 0 {
		t.Fatalf("refused consent requests wrote %d events, want none: %+v", len(evs), evs)
	}

	// Without consent: 403, rule consent.
	if rec := d.mint(featAda, "users", "42", "ticket 1234: needs consent", ""); rec.Code != 403 {
		t.Fatalf("mint without consent: %d %s, want 403", rec.Code, rec.Body.String())
	}
	// With consent: 200.
	put := d.admin("PUT", path, `{"until":"`+until+`","note":"customer agreed on call 17"}`)
	if put.Code != 200 {
		t.Fatalf("PUT: %d %s", put.Code, put.Body.String())
	}
	var got map[string]any
	if get := d.admin("GET", path, ""); get.Code != 200 || json.Unmarshal(get.Body.Bytes(), &got) != nil ||
		got["until"] != until || got["note"] != "customer agreed on call 17" {
		t.Fatalf("GET: %d %s", get.Code, get.Body.String())
	}
	cookie := d.impersonate(featAda, "users", "42", "ticket 1234: needs consent", "")
	// A second token, minted under the consent but not redeemed before the
	// withdrawal, must not open a session after it.
	pending := d.mint(featAda, "users", "42", "ticket 1234: needs consent", "")
	if pending.Code != 200 {
		t.Fatalf("second mint: %d", pending.Code)
	}
	if s := d.do("GET", "/impersonation/session", "", nil, cookie); s.Code != 200 {
		t.Fatalf("session before withdrawal: %d", s.Code)
	}
	del := d.admin("DELETE", path, "")
	if del.Code != 200 || strings.TrimSpace(del.Body.String()) != `{"revoked":1,"withdrawn":true}` {
		t.Fatalf("DELETE: %d %s", del.Code, del.Body.String())
	}
	if s := d.do("GET", "/impersonation/session", "", nil, cookie); s.Code != 401 {
		t.Errorf("session after withdrawal: %d, want 401", s.Code)
	}
	if c, rec := d.login(webhookToken(t, pending.Body.String())); c != nil || rec.Code != 401 {
		t.Errorf("login with a token minted before the withdrawal: %d, want 401", rec.Code)
	}
	if get := d.admin("GET", path, ""); get.Code != 404 {
		t.Errorf("GET after withdrawal: %d, want 404", get.Code)
	}
	if rec := d.mint(featAda, "users", "42", "ticket 1234: needs consent", ""); rec.Code != 403 {
		t.Errorf("mint after withdrawal: %d, want 403", rec.Code)
	}

	u42 := audit.Subject{Collection: "users", ID: "42"}
	by := "by admin API token:" + adminTokenID(featAdminToken)
	imp := func(typ audit.Type, detail string) audit.Event {
		return audit.Event{Type: typ, Actor: adaActor, Subject: u42, Reason: "ticket 1234: needs consent", Scope: "full",
			IP: "192.0.2.1", UserAgent: "features-test", Detail: detail}
	}
	denied := imp(audit.Denied, "rule consent: users 42 has no active consent from the customer")
	denied.Scope = ""
	want := []audit.Event{
		denied,
		{Type: audit.ConsentGranted, Subject: u42, Reason: "customer agreed on call 17", IP: "192.0.2.1", UserAgent: "features-test",
			Detail: by + ", until " + until},
		imp(audit.Minted, "delivery webhook"),
		imp(audit.Redeemed, ""),
		imp(audit.Minted, "delivery webhook"),
		{Type: audit.ConsentWithdrawn, Subject: u42, IP: "192.0.2.1", UserAgent: "features-test", Detail: by},
		imp(audit.Revoked, "consent withdrawn"),
		imp(audit.Rejected, "unknown token id: never minted here, or expired in the store"),
		denied,
	}
	want[7].Reason, want[7].Actor = "", audit.Actor{ID: "1001", Email: "ada@example.com"}
	if diff := cmp.Diff(want, d.events(), eventsIgnore); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// TestConsentExpires: a consent is absent once its until passes, by Redis's
// own expiry: the mint is refused again.
func TestConsentExpires(t *testing.T) {
	policy := action.DefaultPolicy()
	policy.RequireConsent = []string{"users"}
	d := newDeployment(t, policy)
	until := t0.Add(time.Second).Format(time.RFC3339) // one second of consent
	if put := d.admin("PUT", "/v1/consents/users/7", `{"until":"`+until+`"}`); put.Code != 200 {
		t.Fatalf("PUT: %d %s", put.Code, put.Body.String())
	}
	if rec := d.mint(featAda, "users", "7", "ticket 99: quick look", ""); rec.Code != 200 {
		t.Fatalf("mint within consent: %d %s", rec.Code, rec.Body.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec := d.mint(featAda, "users", "7", "ticket 99: quick look", "")
		if rec.Code == 403 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mint still %d 5 s after the consent expired", rec.Code)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// adminTokenID is how the admin API names a caller (AdminFrom).
func adminTokenID(tok string) string {
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	var id string
	requireAdmin([]config.Secret{config.Secret(tok)})(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		id = AdminFrom(r.Context())
	})).ServeHTTP(httptest.NewRecorder(), req)
	return strings.TrimPrefix(id, "token:")
}

// TestHistory: three impersonations of users 42 (one revoked after the
// next one started, one logged out, one live) and one of users 7: the
// history of users 42 lists its three, newest first, with their ends;
// the admin's email only on request; limit=1 walks all three.
func TestHistory(t *testing.T) {
	d := newDeployment(t, nil)
	// An event's time is its stream id's (the Redis server's clock, not
	// d's): each step lets Redis's clock move on too, and the answers show
	// each distinct time by its chronological rank (labelTimes).
	step := func() {
		d.advance(time.Minute)
		time.Sleep(3 * time.Millisecond)
	}
	a := d.impersonate(featAda, "users", "42", "ticket 1: invoices missing", "")
	step()
	b := d.impersonate(featGrace, "users", "42", "ticket 2: address change", "Read only")
	step()
	aSID := sidOf(t, d, a)
	if rec := d.admin("DELETE", "/v1/sessions/"+aSID, ""); rec.Code != 204 {
		t.Fatalf("revoke: %d", rec.Code)
	}
	step()
	d.impersonate(featAda, "users", "7", "ticket 3: another customer", "")
	if rec := d.do("POST", "/impersonation/logout", "", nil, b); rec.Code != 204 {
		t.Fatalf("logout: %d", rec.Code)
	}
	step()
	c := d.impersonate(featAda, "users", "42", "ticket 4: still broken", "")
	sids := map[string]string{aSID: "<session a>", sidOf(t, d, b): "<session b>", sidOf(t, d, c): "<session c>"}
	anonymise := func(s string) string {
		for sid, name := range sids {
			s = strings.ReplaceAll(s, sid, name)
		}
		return labelTimes(s)
	}

	rec := d.admin("GET", "/v1/subjects/users/42/history", "")
	if rec.Code != 200 {
		t.Fatalf("history: %d %s", rec.Code, rec.Body.String())
	}
	checkGolden(t, "history.json", anonymise(rec.Body.String()))
	if strings.Contains(rec.Body.String(), "@example.com") {
		t.Error("the history shows an admin's email without include_actor_email=true")
	}
	with := d.admin("GET", "/v1/subjects/users/42/history?include_actor_email=true", "")
	checkGolden(t, "history-with-email.json", anonymise(with.Body.String()))

	// limit=1 walks the same three, one per page.
	var walked []string
	cursor := ""
	for page := 0; page < 5; page++ {
		path := "/v1/subjects/users/42/history?limit=1"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		rec := d.admin("GET", path, "")
		var p audit.HistoryPage
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &p) != nil || len(p.Impersonations) != 1 {
			t.Fatalf("page %d: %d %s", page, rec.Code, rec.Body.String())
		}
		it := p.Impersonations[0]
		end := "live"
		if it.EndReason != nil {
			end = *it.EndReason
			if it.EndedAt == nil {
				t.Errorf("%s: end_reason %q without ended_at", sids[it.SessionID], end)
			}
		}
		walked = append(walked, sids[it.SessionID]+" "+end)
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
	}
	want := []string{"<session c> live", "<session b> logout", "<session a> revoked by admin API token:" + adminTokenID(featAdminToken)}
	if diff := cmp.Diff(want, walked); diff != "" {
		t.Errorf("limit=1 pages (-want +got):\n%s", diff)
	}

	for _, bad := range []string{"?limit=0", "?limit=201", "?cursor=nope", "?include_actor_email=yes"} {
		if rec := d.admin("GET", "/v1/subjects/users/42/history"+bad, ""); rec.Code != 400 {
			t.Errorf("history%s: %d, want 400", bad, rec.Code)
		}
	}
	if rec := d.admin("GET", "/v1/subjects/users/042/history", ""); rec.Code != 400 {
		t.Errorf("non-canonical id: %d, want 400", rec.Code)
	}
	if rec := d.do("GET", "/v1/subjects/users/42/history", "", nil, nil); rec.Code != 401 {
		t.Errorf("no admin token: %d, want 401", rec.Code)
	}
}

func sidOf(t *testing.T, d *deployment, c *http.Cookie) string {
	t.Helper()
	cl, err := token.NewVerifier(d.keys, d.cfg.PublicURL, d.cfg.Audience, d.clock).Verify(token.Session, c.Value)
	if err != nil {
		t.Fatal(err)
	}
	return cl.SID
}
