package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
)

// forestBearer is the Forest UI's Authorization header for admin.
func (d *deployment) forestBearer(admin jwt.MapClaims) map[string]string {
	d.t.Helper()
	claims := jwt.MapClaims{"exp": d.clock().Add(time.Hour).Unix()}
	for k, v := range admin {
		claims[k] = v
	}
	bearer, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(featForestSecret))
	if err != nil {
		d.t.Fatal(err)
	}
	return map[string]string{"Authorization": "Bearer " + bearer}
}

// review runs the Impersonation history action as admin on path for
// collection/id, as the Forest UI sends it (no form values).
func (d *deployment) review(admin jwt.MapClaims, path, collection, id string) *httptest.ResponseRecorder {
	d.t.Helper()
	body, _ := json.Marshal(map[string]any{"data": map[string]any{"type": "custom-action-requests", "attributes": map[string]any{
		"collection_name": collection, "ids": []string{id}, "values": map[string]any{}, "smart_action_id": collection + "-impersonation-history"}}})
	return d.do(http.MethodPost, path, string(body), d.forestBearer(admin), nil)
}

func policyOf(t *testing.T, yaml string) *action.Policy {
	t.Helper()
	p, err := action.ParsePolicy([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHistoryAction: the Impersonation history action through the real
// routes on a real redis-server. Two impersonations of users 42, one with
// a reason holding markup: the reviewer named by the policy's reviewers
// reads both, newest first, escaped, on both action paths; anyone else
// (even an admin who may impersonate) is refused with Forest's 403; each
// review and each refusal is an audit.viewed event; the form hooks answer
// the empty form to a Forest JWT only.
func TestHistoryAction(t *testing.T) {
	d := newDeployment(t, policyOf(t, "reviewers:\n  emails: [grace@example.com]\n"))
	d.impersonate(featAda, "users", "42", `ticket 9: <script>alert("x")</script> & <b>bold</b>`, "")
	d.advance(time.Minute)
	c := d.impersonate(featAda, "users", "42", "ticket 10: second look", "Read only")
	if rec := d.do("POST", "/impersonation/logout", "", nil, c); rec.Code != 204 {
		t.Fatalf("logout: %d", rec.Code)
	}
	d.advance(time.Minute)
	d.impersonate(featAda, "users", "7", "ticket 11: another customer", "")

	for _, path := range []string{"/forest/actions/impersonation-history", "/forest/_actions/users/3/impersonation-history"} {
		rec := d.review(featGrace, path, "users", "42")
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body.String())
		}
		var a struct{ Success, HTML string }
		dec := json.NewDecoder(strings.NewReader(rec.Body.String()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			t.Fatalf("%s: answer %s: %v", path, rec.Body.String(), err)
		}
		if a.Success != "Impersonation history of users 42" {
			t.Errorf("%s: success %q", path, a.Success)
		}
		html := a.HTML
		for _, bad := range []string{"<script", "<b>", `alert("x")`} {
			if strings.Contains(html, bad) {
				t.Errorf("%s: the HTML holds %q unescaped:\n%s", path, bad, html)
			}
		}
		for _, want := range []string{
			"<strong>2</strong> impersonations of users 42",
			"ticket 9: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;",
			"Ada Lovelace &lt;ada@example.com&gt; (Support)",
			"<td>read</td><td>webhook</td><td>2026-", // the second one: read only, webhook delivery, ended
			": logout</td>",
			"<td>full</td><td>webhook</td><td>live</td>",
		} {
			if !strings.Contains(html, want) {
				t.Errorf("%s: the HTML lacks %q:\n%s", path, want, html)
			}
		}
		if i, j := strings.Index(html, "ticket 10"), strings.Index(html, "ticket 9"); i < 0 || j < 0 || i > j {
			t.Errorf("%s: not newest first:\n%s", path, html)
		}
		if strings.Contains(html, "ticket 11") {
			t.Errorf("%s: another record's impersonation is shown", path)
		}
	}

	// The new agents' path names the collection: another one is refused.
	if rec := d.review(featGrace, "/forest/_actions/companies/3/impersonation-history", "users", "42"); rec.Code != 400 {
		t.Errorf("path collection mismatch: %d %s", rec.Code, rec.Body.String())
	}
	// Ada may impersonate, but is not a reviewer: Forest's 403.
	rec := d.review(featAda, "/forest/actions/impersonation-history", "users", "42")
	want403 := `{"errors":[{"status":403,"name":"CustomActionTriggerForbiddenError","detail":"You are not allowed to review impersonations."}]}`
	if rec.Code != 403 || strings.TrimSpace(rec.Body.String()) != want403 {
		t.Errorf("non-reviewer: %d %s, want 403 %s", rec.Code, rec.Body.String(), want403)
	}
	if rec := d.do("POST", "/forest/actions/impersonation-history", `{}`, nil, nil); rec.Code != 401 {
		t.Errorf("no Forest JWT: %d %s", rec.Code, rec.Body.String())
	}

	var viewed []audit.Event
	for _, e := range d.events() {
		if e.Type == audit.Viewed {
			viewed = append(viewed, e)
		}
	}
	graceActor := audit.Actor{ID: "2002", Email: "grace@example.com", Team: "Operations", Role: "Support", Name: "Grace Hopper", PermissionLevel: "user"}
	u42 := audit.Subject{Collection: "users", ID: "42"}
	shown := "impersonation history in the admin panel: 2 impersonations shown"
	wantEvents := []audit.Event{
		{Type: audit.Viewed, Actor: graceActor, Subject: u42, IP: "192.0.2.1", UserAgent: "features-test", Detail: shown},
		{Type: audit.Viewed, Actor: graceActor, Subject: u42, IP: "192.0.2.1", UserAgent: "features-test", Detail: shown},
		{Type: audit.Viewed, Actor: adaActor, Subject: u42, IP: "192.0.2.1", UserAgent: "features-test",
			Detail: `refused: rule reviewers: admin email "ada@example.com" is not in reviewers.emails`},
	}
	if diff := cmp.Diff(wantEvents, viewed, eventsIgnore); diff != "" {
		t.Errorf("audit.viewed events (-want +got):\n%s", diff)
	}

	// Refused reviews fold: past 10 a minute for one admin, they are
	// counted, not recorded one by one.
	for range 15 {
		if rec := d.review(featAda, "/forest/actions/impersonation-history", "users", "42"); rec.Code != 403 {
			t.Fatalf("non-reviewer: %d", rec.Code)
		}
	}
	refused := 0
	for _, e := range d.events() {
		if e.Type == audit.Viewed && strings.HasPrefix(e.Detail, "refused: ") {
			refused++
		}
	}
	if refused != 10 {
		t.Errorf("16 refused reviews in a minute recorded %d events, want 10 (then folded)", refused)
	}

	// The form hooks: no field (the action runs at once), Forest JWT needed.
	for _, p := range []string{"/forest/actions/impersonation-history", "/forest/_actions/users/3/impersonation-history"} {
		for _, hook := range []string{"/hooks/load", "/hooks/change"} {
			rec := d.do("POST", p+hook, `{"data":{"attributes":{"fields":[]}}}`, d.forestBearer(featAda), nil)
			if got := strings.TrimSpace(rec.Body.String()); rec.Code != 200 || got != `{"fields":[],"layout":[]}` {
				t.Errorf("%s%s: %d %s", p, hook, rec.Code, got)
			}
			if rec := d.do("POST", p+hook, `{}`, nil, nil); rec.Code != 401 {
				t.Errorf("%s%s without a Forest JWT: %d", p, hook, rec.Code)
			}
		}
	}
}

// TestHistoryActionFailsClosed: without Redis, no history is shown (its
// audit.viewed event cannot be written): 503 in Forest's error shape.
func TestHistoryActionFailsClosed(t *testing.T) {
	d := newDeployment(t, nil)
	d.impersonate(featAda, "users", "42", "ticket 12: before the outage", "")
	d.srv.Stop()
	rec := d.review(featAda, "/forest/actions/impersonation-history", "users", "42")
	if rec.Code != 503 || strings.Contains(rec.Body.String(), "ticket 12") || !strings.Contains(rec.Body.String(), `"name":"ServiceUnavailableError"`) {
		t.Errorf("without Redis: %d %s, want 503 and no history", rec.Code, rec.Body.String())
	}
}

// TestHistoryActionDefaultReviewers: without reviewers in the policy,
// whoever may impersonate may review, and no one else.
func TestHistoryActionDefaultReviewers(t *testing.T) {
	d := newDeployment(t, policyOf(t, "admins:\n  teams: [Support]\n"))
	if rec := d.review(featAda, "/forest/actions/impersonation-history", "users", "42"); rec.Code != 200 ||
		!strings.Contains(rec.Body.String(), "<strong>0</strong> impersonations of users 42") {
		t.Errorf("admin who may impersonate: %d %s", rec.Code, rec.Body.String())
	}
	if rec := d.review(featGrace, "/forest/actions/impersonation-history", "users", "42"); rec.Code != 403 {
		t.Errorf("admin who may not impersonate: %d %s, want 403", rec.Code, rec.Body.String())
	}
}
