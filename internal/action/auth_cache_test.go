package action

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestAuthenticatorCacheKeepsExpiry: a JWT remembered as verified is still
// refused once it expires, and another JWT is never served from the cache.
func TestAuthenticatorCacheKeepsExpiry(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	a := NewAuthenticator("forest-auth-secret-0123456789abcdef", func() time.Time { return now })
	sign := func(secret string, exp time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"id": 1, "email": "a@example.com", "exp": exp.Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tok := sign("forest-auth-secret-0123456789abcdef", now.Add(time.Minute))
	auth := func(tok string) error {
		r := httptest.NewRequest("POST", "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := a.Authenticate(r)
		return err
	}
	for range 2 {
		if err := auth(tok); err != nil {
			t.Fatalf("valid JWT: %v", err)
		}
	}
	if err := auth(sign("another-secret-0123456789abcdefghij", now.Add(time.Minute))); err == nil {
		t.Error("a JWT signed with another secret was accepted")
	}
	now = now.Add(time.Minute + 6*time.Second)
	if err := auth(tok); err == nil {
		t.Error("the cached JWT was accepted after its exp")
	}
}
