package server

import (
	"context"
	"net/http"

	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/token"
)

func handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

type pinger interface {
	Ping(ctx context.Context) error
}

// handleReadyz answers 200 only while Redis answers: without it the service
// refuses every mint and login.
func handleReadyz(p pinger) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := p.Ping(r.Context()); err != nil {
			return &httpx.Error{Status: http.StatusServiceUnavailable, Message: "redis unavailable", Cause: err}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	}
}

func handleJWKS(keys *token.Keyset) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		_, _ = w.Write(keys.JWKS())
	}
}
