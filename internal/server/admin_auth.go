package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/httpx"
)

type adminKey struct{}

// AdminFrom returns the identity of the admin API caller in ctx: "token:"
// and the first 12 hex digits of the SHA-256 of the bearer token it used
// (stable, and useless to an attacker). Empty outside the admin routes.
func AdminFrom(ctx context.Context) string {
	s, _ := ctx.Value(adminKey{}).(string)
	return s
}

// requireAdmin admits requests whose bearer token equals one of tokens,
// compared in constant time against every token (no early exit). Without
// configured tokens the admin API is disabled: 403.
func requireAdmin(tokens []config.Secret) func(http.Handler) http.Handler {
	hashes := make([][32]byte, len(tokens))
	for i, t := range tokens {
		hashes[i] = sha256.Sum256([]byte(t.Reveal()))
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if len(hashes) == 0 {
				httpx.WriteJSON(w, http.StatusForbidden, map[string]string{"error": "admin API disabled: set IMPERSONATOR_ADMIN_TOKENS"})
				return
			}
			raw, ok := bearer(r)
			// Compare fixed-length digests, so neither the time taken nor
			// an early exit tells anything about a token's length or value.
			got := sha256.Sum256([]byte(raw))
			match := 0
			for _, h := range hashes {
				match |= subtle.ConstantTimeCompare(got[:], h[:])
			}
			if !ok || match != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="impersonator"`)
				httpx.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
				return
			}
			id := "token:" + hex.EncodeToString(got[:6])
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), adminKey{}, id)))
		})
	}
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}
