package action_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/token"
)

// The hostile-input table (issue 9): each attack found is refused, and a
// legitimate request of the same shape still succeeds.

func body(id, reason string) string {
	return `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":[` + id +
		`],"values":{"Reason":` + reason + `},"smart_action_id":"users-impersonate"}}}`
}

// TestNeverListSpellings: an id spelled differently cannot slip past the
// never list: every spelling Rails or JavaScript reads as user 1 is refused,
// and the canonical id is what the token, the session and the audit carry.
func TestNeverListSpellings(t *testing.T) {
	policy := action.DefaultPolicy()
	policy.Never = map[string][]string{"users": {"1"}}
	for _, tc := range []struct {
		name, id string
		status   int
		detail   string
		sub      string
	}{
		{"leading zero", `"01"`, 400, "refused: id is not canonical", ""},
		{"leading space", `" 1"`, 400, "refused: id is not canonical", ""},
		{"trailing space", `"1 "`, 400, "refused: id is not canonical", ""},
		{"plus sign", `"+1"`, 400, "refused: id is not canonical", ""},
		{"fraction", `1.0`, 400, "refused: id is not canonical", ""},
		{"exponent", `1e0`, 400, "refused: id is not canonical", ""},
		{"fullwidth digit", `"１"`, 400, "refused: id is not canonical", ""},
		{"zero-width space", `"1\u200b"`, 400, "refused: id is not canonical", ""},
		{"slug read as 1", `"1-slug"`, 403, "rule never", ""},
		{"the listed id", `"1"`, 403, "rule never", ""},
		{"control: a string id", `"42"`, 200, "delivery", "42"},
		{"control: a number id", `42`, 200, "delivery", "42"},
		{"control: a slug not read as 1", `"12-slug"`, 200, "delivery", "12-slug"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := redistest.EmbeddedURL(t)
			f := newFixture(t, url, nil, policy)
			rec := f.post(legacyPath, forestJWT(t, authSecret, nodeAdmin()), body(tc.id, `"ticket 1234"`))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body.String())
			}
			evs := f.events(t)
			if len(evs) != 1 || !strings.Contains(evs[0].Detail, tc.detail) {
				t.Fatalf("events %+v, want one whose detail has %q", evs, tc.detail)
			}
			if tc.sub != "" {
				c, err := f.verifier.Verify(token.Impersonation, extractToken(t, rec.Body.String()))
				if err != nil || c.Subject != tc.sub || evs[0].Subject.ID != tc.sub {
					t.Errorf("token sub %q, event subject %q (%v); want the canonical %q", c.Subject, evs[0].Subject.ID, err, tc.sub)
				}
			}
		})
	}
}

// TestApprovalsOneShot: an approval request needs exp and iat, must be for
// this action and collection, and is redeemable once.
func TestApprovalsOneShot(t *testing.T) {
	attrs := func(action, collection string) map[string]any {
		return map[string]any{"requester_id": 3003, "ids": []string{"42"}, "collection_name": collection,
			"smart_action_id": action, "values": map[string]any{"Reason": "ticket 777 approved"}}
	}
	sign := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(envSecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	approvalBody := func(signed string) string {
		return `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],"values":{},"smart_action_id":"users-impersonate","signed_approval_request":"` + signed + `"}}}`
	}
	good := jwt.MapClaims{"data": map[string]any{"attributes": attrs("users-impersonate", "users")}, "iat": t0.Add(-time.Minute).Unix(), "exp": t0.Add(time.Hour).Unix()}
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		path   string
		detail string
	}{
		{"no exp", jwt.MapClaims{"data": good["data"], "iat": good["iat"]}, legacyPath, "rule approval"},
		{"no iat", jwt.MapClaims{"data": good["data"], "exp": good["exp"]}, legacyPath, "iat is required"},
		{"more than a day old", jwt.MapClaims{"data": good["data"], "iat": t0.Add(-25 * time.Hour).Unix(), "exp": good["exp"]}, legacyPath, "more than 24h0m0s"},
		{"another action", jwt.MapClaims{"data": map[string]any{"attributes": attrs("users-send-email", "users")}, "iat": good["iat"], "exp": good["exp"]}, legacyPath, `smart_action_id "users-send-email"`},
		{"another collection than the route's", good, "/forest/_actions/companies/0/impersonate", `collection "users" is not the route's "companies"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := redistest.EmbeddedURL(t)
			f := newFixture(t, url, nil, nil)
			rec := f.post(tc.path, forestJWT(t, authSecret, nodeAdmin()), approvalBody(sign(tc.claims)))
			evs := f.events(t)
			if rec.Code != 403 || len(evs) != 1 || evs[0].Type != audit.Denied || !strings.Contains(evs[0].Detail, tc.detail) {
				t.Errorf("%d %s, events %+v; want 403 and a denied event mentioning %q", rec.Code, rec.Body.String(), evs, tc.detail)
			}
		})
	}
	t.Run("replayed", func(t *testing.T) {
		_, url := redistest.EmbeddedURL(t)
		prefix := redistest.Prefix()
		a, b := newInstance(t, url, prefix, nil, nil), newInstance(t, url, prefix, nil, nil)
		signed := sign(good)
		if rec := a.post(legacyPath, forestJWT(t, authSecret, nodeAdmin()), approvalBody(signed)); rec.Code != 200 {
			t.Fatalf("first use: %d %s", rec.Code, rec.Body.String())
		}
		for _, f := range []*fixture{a, b} {
			if rec := f.post(legacyPath, forestJWT(t, authSecret, nodeAdmin()), approvalBody(signed)); rec.Code != 403 {
				t.Errorf("replay: %d, want 403", rec.Code)
			}
		}
		evs := a.events(t)
		if len(evs) != 3 || evs[0].Type != audit.Minted || evs[1].Detail != "rule approval: this approval request was already used" || evs[2].Type != audit.Denied {
			t.Errorf("events = %+v, want minted then two denials naming the approval rule", evs)
		}
	})
}

// TestReasonsAReviewerCanRead: reasons that hide what they say are refused;
// accented text is fine.
func TestReasonsAReviewerCanRead(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		status       int
	}{
		{"12 zero-width spaces", `"` + strings.Repeat(`\u200b`, 12) + `"`, 400},
		{"12 combining marks", `"` + strings.Repeat(`\u0301`, 12) + `"`, 400},
		{"12 lone surrogates", `"` + strings.Repeat(`\ud800`, 12) + `"`, 400},
		{"a bidi override", `"ticket 1234 \u202e gnp.exe"`, 400},
		{"an escape sequence", `"ticket 1234 \u001b[2J\u001b[H"`, 400},
		{"a newline forging a row", `"ticket 1234\n2026-11-25T00:00:00Z  impersonation.minted"`, 400},
		{"8 visible with padding", `"   abc   defgh   "`, 200},
		{"control: accented, NFC", `"réclamation 1234 facture"`, 200},
		{"control: accented, NFD", `"re\u0301clamation 1234 facture"`, 200},
		{"control: a tab", `"ticket\t1234 invoices"`, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := redistest.EmbeddedURL(t)
			f := newFixture(t, url, nil, nil)
			rec := f.post(legacyPath, forestJWT(t, authSecret, nodeAdmin()), body(`"42"`, tc.reason))
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d: %s", rec.Code, tc.status, rec.Body.String())
			}
		})
	}
}

// TestBoundedAuditGrowth: what an outsider can make the log keep is capped,
// and a refused admin's denials past ten a minute are folded into one
// summary event instead of one event each.
func TestBoundedAuditGrowth(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	policy := action.DefaultPolicy()
	policy.Emails = []string{"nobody@example.com"} // ada is refused
	f := newFixture(t, url, nil, policy)
	long := `"` + strings.Repeat("x", 64<<10-300) + `"`
	req := httptest.NewRequest(http.MethodPost, legacyPath, strings.NewReader(body(`"42"`, long)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+forestJWT(t, authSecret, nodeAdmin()))
	req.Header.Set("User-Agent", strings.Repeat("u", 30<<10))
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	if rec.Code != 400 {
		t.Fatalf("a 64 KiB reason: %d, want 400 (over the 1000-byte bound)", rec.Code)
	}
	evs := f.events(t)
	if len(evs) != 1 || len(evs[0].Reason) > audit.MaxReasonBytes || len(evs[0].UserAgent) > audit.MaxUserAgentBytes {
		t.Fatalf("stored reason %d bytes, user agent %d bytes; want at most %d and %d", len(evs[0].Reason), len(evs[0].UserAgent), audit.MaxReasonBytes, audit.MaxUserAgentBytes)
	}
	for range 30 {
		f.post(legacyPath, forestJWT(t, authSecret, nodeAdmin()), body(`"42"`, `"ticket 1234"`))
	}
	if n := len(f.events(t)); n != 10 {
		t.Errorf("%d events after 31 denials in a minute, want the first 10 only", n)
	}
}

// TestDenialRecordedWhenTheClientLeaves: a refusal whose client hung up is
// still recorded.
func TestDenialRecordedWhenTheClientLeaves(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	policy := action.DefaultPolicy()
	policy.Never = map[string][]string{"users": {"42"}}
	f := newFixture(t, url, nil, policy)
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequest(http.MethodPost, legacyPath, strings.NewReader(body(`"42"`, `"ticket 1234"`))).WithContext(ctx)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+forestJWT(t, authSecret, nodeAdmin()))
	cancel()
	f.h.ServeHTTP(httptest.NewRecorder(), req)
	if evs := f.events(t); len(evs) != 1 || evs[0].Type != audit.Denied {
		t.Errorf("events = %+v, want the denial recorded", evs)
	}
}
