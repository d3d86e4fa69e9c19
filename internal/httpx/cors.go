package httpx

import (
	"net/http"

	"github.com/rs/cors"
)

// CORS answers preflights and decorates answers for browser origins in
// origins (exact "https://app.example.com" or one-wildcard
// "https://*.example.com" patterns), with credentials, the headers the
// Forest UI sends, a one-day preflight cache and the Private Network Access
// answer. A foreign origin gets no CORS header at all, so the browser
// withholds the answer from its page.
func CORS(origins []string, methods ...string) func(http.Handler) http.Handler {
	c := cors.New(cors.Options{
		AllowedOrigins:      origins,
		AllowedMethods:      methods,
		AllowedHeaders:      []string{"Authorization", "Content-Type", "Forest-Context-Url", "X-Requested-With"},
		AllowCredentials:    true,
		AllowPrivateNetwork: true,
		MaxAge:              86400,
	})
	return c.Handler
}
