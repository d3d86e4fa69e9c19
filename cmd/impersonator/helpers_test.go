package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// forestSecret is FOREST_AUTH_SECRET in these tests.
const forestSecret = "test-forest-auth-secret-0123456789abcdefgh"

// forestJWT is what the Forest UI sends: an HS256 JWT of the admin.
func forestJWT(t *testing.T) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"id": 1001, "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "team": "Support",
		"role": "Admin", "permissionLevel": "admin", "renderingId": 7, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(forestSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mint calls the Forest action on base as the Forest UI does and returns
// the token of its webhook answer.
func mint(t *testing.T, base, id string) string {
	t.Helper()
	body := `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["` + id +
		`"],"values":{"Reason":"ticket 1234: cannot see invoices"},"smart_action_id":"users-impersonate"}}}`
	req, _ := http.NewRequest(http.MethodPost, base+"/forest/actions/impersonate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+forestJWT(t))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var a struct {
		Webhook struct {
			Body struct{ Token string } `json:"body"`
		} `json:"webhook"`
	}
	if res.StatusCode != 200 || json.Unmarshal(b, &a) != nil || a.Webhook.Body.Token == "" {
		t.Fatalf("mint: %d %s", res.StatusCode, b)
	}
	return a.Webhook.Body.Token
}

// login redeems tok at base's login endpoint, as the webhook does, and
// returns the session cookie.
func login(t *testing.T, base, tok string) *http.Cookie {
	t.Helper()
	res, err := http.Post(base+"/impersonation/login", "application/json", strings.NewReader(`{"token":"`+tok+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("login: %d %s", res.StatusCode, b)
	}
	for _, ck := range res.Cookies() {
		if strings.HasSuffix(ck.Name, "impersonation_session") {
			return ck
		}
	}
	t.Fatal("no session cookie")
	return nil
}

type exported struct {
	StreamID string `json:"stream_id"`
	Type     string `json:"type"`
}

// eventLines returns the event lines of an `audit export`.
func eventLines(export string) []exported {
	var out []exported
	for _, line := range strings.Split(strings.TrimSpace(export), "\n") {
		var e exported
		if json.Unmarshal([]byte(line), &e) == nil && e.Type != "" {
			out = append(out, e)
		}
	}
	return out
}
