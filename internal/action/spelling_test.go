package action_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
)

// Spellings of one JWT (issue 18): a base64url string has one canonical
// spelling, and lenient decoders read others as the same bytes.

// flipLowBits changes the unused low bits of a segment's last character
// ("I" -> "J"): the same bytes to a lenient decoder.
func flipLowBits(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[last^1])
}

// respellings are other spellings of raw's signature that a lenient
// base64url decoder reads as the same bytes.
func respellings(raw string) map[string]string {
	i := strings.LastIndexByte(raw, '.')
	head, sig := raw[:i+1], raw[i+1:]
	return map[string]string{
		"low bits":      head + flipLowBits(sig),
		"padding":       head + sig + "=",
		"line break":    head + sig[:20] + "\n" + sig[20:],
		"std alphabet":  head + strings.NewReplacer("-", "+", "_", "/").Replace(sig) + "+"[:boolInt(!strings.ContainsAny(sig, "-_"))],
		"trailing CRLF": raw + "\r\n",
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestApprovalRespelled: a used approval, re-spelled, never mints again,
// through the action route on a real redis-server and across instances;
// a re-spelled approval is refused even before its first use, and the
// control approval mints exactly once.
func TestApprovalRespelled(t *testing.T) {
	srv := redistest.StartServer(t)
	prefix := redistest.Prefix()
	a, b := newInstance(t, srv.URL(), prefix, nil, nil), newInstance(t, srv.URL(), prefix, nil, nil)
	sign := func(reason string) string {
		attrs := map[string]any{"requester_id": 3003, "ids": []string{"42"}, "collection_name": "users",
			"smart_action_id": "users-impersonate", "values": map[string]any{"Reason": reason}}
		return forestJWT(t, envSecret, jwt.MapClaims{"data": map[string]any{"attributes": attrs},
			"iat": t0.Add(-time.Minute).Unix(), "exp": t0.Add(time.Hour).Unix()})
	}
	post := func(f *fixture, signed string) int {
		q, _ := json.Marshal(signed)
		body := `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],"values":{},"smart_action_id":"users-impersonate","signed_approval_request":` + string(q) + `}}}`
		return f.post(legacyPath, forestJWT(t, authSecret, nodeAdmin()), body).Code
	}
	minted := func() int {
		n := 0
		for _, e := range a.events(t) {
			if e.Type == audit.Minted {
				n++
			}
		}
		return n
	}

	used := sign("ticket 777 approved")
	// Before its first use: every other spelling is refused outright.
	for name, s := range respellings(used) {
		if code := post(a, s); code != http.StatusForbidden {
			t.Errorf("unused approval re-spelled (%s): %d, want 403", name, code)
		}
	}
	if got := minted(); got != 0 {
		t.Fatalf("%d mints from re-spelled approvals, want 0", got)
	}
	if code := post(a, used); code != http.StatusOK {
		t.Fatalf("first use of the approval: %d, want 200", code)
	}
	for name, s := range respellings(used) {
		for _, f := range []*fixture{a, b} {
			if code := post(f, s); code != http.StatusForbidden {
				t.Errorf("used approval re-spelled (%s): %d, want 403", name, code)
			}
		}
	}
	if code := post(b, used); code != http.StatusForbidden {
		t.Errorf("used approval as it was: %d, want 403", code)
	}
	if got := minted(); got != 1 {
		t.Errorf("%d mints from one approval, want 1", got)
	}

	// The control: another approval mints once, then is used.
	control := sign("ticket 778 approved")
	if code := post(b, control); code != http.StatusOK {
		t.Errorf("control approval: %d, want 200", code)
	}
	if code := post(a, control); code != http.StatusForbidden {
		t.Errorf("control approval again: %d, want 403", code)
	}
	if got := minted(); got != 2 {
		t.Errorf("%d mints in all, want 2 (one per approval)", got)
	}
}

// TestForestJWTRespelled: the admin's Forest JWT, re-spelled, is 401; the
// control is 200.
func TestForestJWTRespelled(t *testing.T) {
	srv := redistest.StartServer(t)
	f := newFixture(t, srv.URL(), nil, nil)
	bearer := forestJWT(t, authSecret, nodeAdmin())
	reqBody := body(`"42"`, `"ticket 1234"`)
	for name, s := range respellings(bearer) {
		if strings.ContainsAny(s, "\r\n") {
			continue // a header cannot carry a line break
		}
		if rec := f.post(legacyPath, s, reqBody); rec.Code != http.StatusUnauthorized {
			t.Errorf("Forest JWT re-spelled (%s): %d, want 401", name, rec.Code)
		}
	}
	if rec := f.post(legacyPath, bearer, reqBody); rec.Code != http.StatusOK {
		t.Errorf("control: %d %s, want 200", rec.Code, rec.Body.String())
	}
}
