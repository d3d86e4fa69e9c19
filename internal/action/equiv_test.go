package action_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/ident"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/token"
)

// equivPolicy never-lists one UUID, one ObjectId and one string in an
// undeclared collection (users) and in collections whose id kind is
// declared.
const equivPolicy = `
collections: [users, accounts, devices, orders, tags, handles]
ids:
  accounts: uuid
  devices: objectid
  orders: integer
  tags: string
  handles: {kind: string, case_sensitive: true}
never:
  users: ["550e8400-e29b-41d4-a716-446655440000", "507f1f77bcf86cd799439011", "abc"]
  accounts: ["550E8400E29B41D4A716446655440000"]
  devices: ["507F1F77BCF86CD799439011"]
  orders: ["7"]
  tags: ["ABC"]
  handles: ["abc"]
`

func collectionBody(collection, id string) string {
	return `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"` + collection + `","ids":[` + id +
		`],"values":{"Reason":"ticket 1234"},"smart_action_id":"` + collection + `-impersonate"}}}`
}

// TestNeverListEquivalentSpellings (issue 18): a never-listed record is
// refused in every spelling its database reads as that record (each of
// these minted before), and in its canonical form; a declared id kind puts
// the id in its one spelling in the token and the audit, and refuses an id
// that is not of the kind (400). Controls mint.
func TestNeverListEquivalentSpellings(t *testing.T) {
	srv := redistest.StartServer(t)
	policy := mustPolicy(t, equivPolicy)
	for _, tc := range []struct {
		name, collection, id string
		status               int
		detail               string // of the one audit event
		sub                  string // the token's and the event's subject, when 200
	}{
		// Undeclared: a UUID or ObjectId in any spelling, a string in any case.
		{"uuid upper case", "users", `"550E8400-E29B-41D4-A716-446655440000"`, 403, "rule never", ""},
		{"uuid without hyphens", "users", `"550e8400e29b41d4a716446655440000"`, 403, "rule never", ""},
		{"uuid without hyphens, upper case", "users", `"550E8400E29B41D4A716446655440000"`, 403, "rule never", ""},
		{"uuid urn", "users", `"urn:uuid:550e8400-e29b-41d4-a716-446655440000"`, 403, "rule never", ""},
		{"uuid canonical", "users", `"550e8400-e29b-41d4-a716-446655440000"`, 403, "rule never", ""},
		{"objectid upper case", "users", `"507F1F77BCF86CD799439011"`, 403, "rule never", ""},
		{"objectid canonical", "users", `"507f1f77bcf86cd799439011"`, 403, "rule never", ""},
		{"string upper case", "users", `"ABC"`, 403, "another spelling of abc", ""},
		{"string mixed case", "users", `"aBc"`, 403, "rule never", ""},
		{"string canonical", "users", `"abc"`, 403, "rule never", ""},
		{"control: another uuid, undeclared, kept as sent", "users", `"550E8400-E29B-41D4-A716-446655440001"`, 200, "delivery", "550E8400-E29B-41D4-A716-446655440001"},
		{"control: another string", "users", `"abd"`, 200, "delivery", "abd"},

		// uuid: every spelling is the one lower-case hyphenated id.
		{"declared uuid, upper case", "accounts", `"550E8400-E29B-41D4-A716-446655440000"`, 403, "rule never", ""},
		{"declared uuid, without hyphens", "accounts", `"550e8400e29b41d4a716446655440000"`, 403, "rule never", ""},
		{"declared uuid, canonical", "accounts", `"550e8400-e29b-41d4-a716-446655440000"`, 403, "rule never", ""},
		{"declared uuid, not a uuid", "accounts", `"abc"`, 400, "refused: id is not canonical", ""},
		{"declared uuid, a number", "accounts", `42`, 400, "refused: id is not canonical", ""},
		{"control: declared uuid, upper case, minted canonical", "accounts", `"550E8400E29B41D4A716446655440001"`, 200, "delivery", "550e8400-e29b-41d4-a716-446655440001"},

		// objectid
		{"declared objectid, lower case", "devices", `"507f1f77bcf86cd799439011"`, 403, "rule never", ""},
		{"declared objectid, upper case", "devices", `"507F1F77BCF86CD799439011"`, 403, "rule never", ""},
		{"declared objectid, 23 digits", "devices", `"507f1f77bcf86cd79943901"`, 400, "refused: id is not canonical", ""},
		{"control: declared objectid, minted lower case", "devices", `"507F1F77BCF86CD799439012"`, 200, "delivery", "507f1f77bcf86cd799439012"},

		// integer
		{"declared integer, string", "orders", `"7"`, 403, "rule never", ""},
		{"declared integer, number", "orders", `7`, 403, "rule never", ""},
		{"declared integer, slug", "orders", `"7-slug"`, 400, "refused: id is not canonical", ""},
		{"control: declared integer", "orders", `8`, 200, "delivery", "8"},

		// string, compared without case
		{"declared string, lower case", "tags", `"abc"`, 403, "rule never", ""},
		{"control: declared string, case kept", "tags", `"ABD"`, 200, "delivery", "ABD"},

		// string, case-sensitive: another case is another record
		{"declared case-sensitive string, listed", "handles", `"abc"`, 403, "rule never", ""},
		{"control: declared case-sensitive string, another case", "handles", `"ABC"`, 200, "delivery", "ABC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, srv.URL(), nil, policy)
			rec := f.post(legacyPath, forestJWT(t, authSecret, nodeAdmin()), collectionBody(tc.collection, tc.id))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body.String())
			}
			evs := f.events(t)
			if len(evs) != 1 || !strings.Contains(evs[0].Detail, tc.detail) {
				t.Fatalf("events %+v, want one whose detail has %q", evs, tc.detail)
			}
			if tc.sub == "" {
				return
			}
			c, err := f.verifier.Verify(token.Impersonation, extractToken(t, rec.Body.String()))
			if err != nil || c.Subject != tc.sub || evs[0].Subject.ID != tc.sub {
				t.Errorf("token sub %q, event subject %q (%v); want %q", c.Subject, evs[0].Subject.ID, err, tc.sub)
			}
			if !strings.Contains(rec.Body.String(), `"success":"Impersonating `+tc.collection+` `+tc.sub+`"`) {
				t.Errorf("answer %s does not name %s %s", rec.Body.String(), tc.collection, tc.sub)
			}
			// The session the token opens is the canonical record's.
			login := httptest.NewRequest(http.MethodPost, "/impersonation/login",
				strings.NewReader(`{"token":"`+extractToken(t, rec.Body.String())+`"}`))
			login.Header.Set("Content-Type", "application/json")
			lrec := httptest.NewRecorder()
			f.h.ServeHTTP(lrec, login)
			var s struct{ Subject string }
			if err := json.Unmarshal(lrec.Body.Bytes(), &s); lrec.Code != 200 || err != nil || s.Subject != tc.sub {
				t.Errorf("login: %d %s, want 200 with subject %q", lrec.Code, lrec.Body.String(), tc.sub)
			}
		})
	}
}

// TestPolicyIDKinds: the policy's ids key refuses what it cannot mean, and
// a never entry that is not of its collection's kind.
func TestPolicyIDKinds(t *testing.T) {
	for _, tc := range []struct{ name, doc, problem string }{
		{"unknown kind", "ids: {users: guid}", `id kind "guid"`},
		{"case_sensitive on a uuid", "ids: {users: {kind: uuid, case_sensitive: true}}", "case_sensitive applies to kind string only"},
		{"misspelled key", "ids: {users: {kind: string, case_sensitve: true}}", `unknown key "case_sensitve"`},
		{"collection not in collections", "ids: {companies: uuid}", `ids: collection "companies"`},
		{"never entry not a uuid", "ids: {users: uuid}\nnever: {users: [abc]}", "never.users"},
		{"never entry not an integer", "ids: {users: integer}\nnever: {users: [abc]}", "never.users"},
	} {
		if _, err := action.ParsePolicy([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.problem) {
			t.Errorf("%s: ParsePolicy = %v, want an error about %s", tc.name, err, tc.problem)
		}
	}
	p := mustPolicy(t, "ids: {users: {kind: string, case_sensitive: true}}")
	if p.IDs["users"] != ident.StringCaseSensitive {
		t.Errorf("ids.users = %q, want %q", p.IDs["users"], ident.StringCaseSensitive)
	}
}

// TestReasonsHidingText (issue 18): through the action route, a reason of
// blank-looking letters or with hidden text is refused (400) and audited
// as refused; Hebrew and Arabic with their marks mint.
func TestReasonsHidingText(t *testing.T) {
	srv := redistest.StartServer(t)
	for _, tc := range []struct {
		name, reason string
		status       int
	}{
		{"9 Hangul fillers U+3164", `"` + strings.Repeat(`\u3164`, 9) + `"`, 400},
		{"9 braille blanks U+2800", `"` + strings.Repeat(`\u2800`, 9) + `"`, 400},
		{"9 Hangul choseong fillers U+115F", `"` + strings.Repeat(`\u115f`, 9) + `"`, 400},
		{"U+1160 padding", `"ticket 1234` + strings.Repeat(`\u1160`, 3) + `"`, 400},
		{"U+FFA0 padding", `"ticket 1234` + strings.Repeat(`\uffa0`, 3) + `"`, 400},
		{"tag characters hiding a message", `"ticket 1234 \udb40\udc69\udb40\udc67\udb40\udc6e"`, 400},
		{"interlinear annotation", `"ticket 1234 \ufff9shown\ufffahidden\ufffb"`, 400},
		{"control: Hebrew with niqqud", `"בַּקָּשָׁה מִסְפָּר 1234"`, 200},
		{"control: Arabic with harakat and a right-to-left mark", `"طَلَبٌ رَقْمُ 1234 \u200fفَاتُورَة"`, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, srv.URL(), nil, nil)
			rec := f.post(legacyPath, forestJWT(t, authSecret, nodeAdmin()), body(`"42"`, tc.reason))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body.String())
			}
			evs := f.events(t)
			want := "delivery"
			if tc.status == 400 {
				want = "refused: "
			}
			if len(evs) != 1 || !strings.Contains(evs[0].Detail, want) {
				t.Errorf("events %+v, want one whose detail has %q", evs, want)
			}
		})
	}
}

// TestHooksNeedForestJWT (issue 18): the form hooks answer 401 in Forest's
// error shape without a valid Forest JWT, and do not show the form (which
// reveals the policy's default_access).
func TestHooksNeedForestJWT(t *testing.T) {
	srv := redistest.StartServer(t)
	f := newFixture(t, srv.URL(), nil, mustPolicy(t, "default_access: read\n"))
	expired := nodeAdmin()
	expired["exp"] = t0.Add(-time.Hour).Unix()
	for _, path := range []string{legacyPath + "/hooks/load", legacyPath + "/hooks/change", agentPath + "/hooks/load", agentPath + "/hooks/change"} {
		for _, tc := range []struct{ name, bearer string }{
			{"no JWT", ""},
			{"another secret", forestJWT(t, "another-secret-0123456789abcdefghij", nodeAdmin())},
			{"expired", forestJWT(t, authSecret, expired)},
			{"not a JWT", "hooks"},
		} {
			rec := f.post(path, tc.bearer, "")
			if rec.Code != 401 || !strings.Contains(rec.Body.String(), `"name":"Unauthorized"`) || strings.Contains(rec.Body.String(), "Read only") {
				t.Errorf("%s, %s: %d %s; want 401 Unauthorized without the form", path, tc.name, rec.Code, rec.Body.String())
			}
		}
		if rec := f.post(path, forestJWT(t, authSecret, nodeAdmin()), ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"defaultValue":"Read only"`) {
			t.Errorf("%s, control: %d %s; want 200 with the form", path, rec.Code, rec.Body.String())
		}
	}
}

// TestControlCharactersInForestValues (issue 18): a Forest-signed email or
// id with a NUL or CR LF is refused at mint (400, naming the field), so it
// never reaches the token, the session or X-Impersonation-Actor.
func TestControlCharactersInForestValues(t *testing.T) {
	srv := redistest.StartServer(t)
	for _, tc := range []struct {
		name, claim, value string
		status             int
	}{
		{"NUL in the email", "email", "ada\x00@example.com", 400},
		{"CR LF in the email", "email", "ada@example.com\r\nX-Impersonation-Actor: root@example.com", 400},
		{"ESC in the team", "team", "Support\x1b[2J", 400},
		{"LF in the id", "id", "1001\n", 400},
		{"control: a non-ASCII email", "email", "zoë@exämple.com", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, srv.URL(), nil, nil)
			claims := nodeAdmin()
			claims[tc.claim] = tc.value
			rec := f.post(legacyPath, forestJWT(t, authSecret, claims), body(`"42"`, `"ticket 1234"`))
			if rec.Code != tc.status {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body.String(), tc.status)
			}
			if tc.status == 400 && !strings.Contains(rec.Body.String(), "Forest user's "+tc.claim+" contains a control character") {
				t.Errorf("answer %s does not say which field to fix", rec.Body.String())
			}
			if evs := f.events(t); tc.status == 400 && (len(evs) != 1 || !strings.Contains(evs[0].Detail, "control character")) {
				t.Errorf("events %+v, want the refusal recorded", evs)
			}
		})
	}
}

// TestConsentByIDKind (issue 18): a consent granted through the API to a
// declared uuid in another spelling is the record's consent: the action,
// which mints the one spelling, finds it; another record still has none.
func TestConsentByIDKind(t *testing.T) {
	srv := redistest.StartServer(t)
	const admin = "k-3f9a0c7e1b5d2846a0e9c3f7b1d5e829"
	f := newFixture(t, srv.URL(), map[string]string{"IMPERSONATOR_ADMIN_TOKENS": admin},
		mustPolicy(t, "collections: [accounts]\nids: {accounts: uuid}\nrequire_consent: [accounts]\n"))
	put := httptest.NewRequest(http.MethodPut, "/v1/consents/accounts/550E8400E29B41D4A716446655440000",
		strings.NewReader(`{"until":"`+t0.Add(time.Hour).Format(time.RFC3339)+`","note":"ticket 1234"}`))
	put.Header.Set("Authorization", "Bearer "+admin)
	put.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, put)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"550e8400-e29b-41d4-a716-446655440000"`) {
		t.Fatalf("consent: %d %s, want 200 for the canonical id", rec.Code, rec.Body.String())
	}
	bearer := forestJWT(t, authSecret, nodeAdmin())
	if rec := f.post(legacyPath, bearer, collectionBody("accounts", `"550e8400-e29b-41d4-a716-446655440000"`)); rec.Code != 200 {
		t.Errorf("mint with the consent: %d %s, want 200", rec.Code, rec.Body.String())
	}
	if rec := f.post(legacyPath, bearer, collectionBody("accounts", `"550e8400-e29b-41d4-a716-446655440001"`)); rec.Code != 403 {
		t.Errorf("another record: %d, want 403", rec.Code)
	}
}
