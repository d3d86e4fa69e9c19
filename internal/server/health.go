package server

import (
	"context"
	"log/slog"
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
func handleReadyz(log *slog.Logger, p pinger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := p.Ping(r.Context()); err != nil {
			httpx.LogError(log, r, httpx.Errorf(http.StatusServiceUnavailable, "redis unavailable", err))
			httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "redis unavailable"})
			return
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

func handleJWKS(keys *token.Keyset) http.HandlerFunc {
	body := keys.JWKS()
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		_, _ = w.Write(body)
	}
}
