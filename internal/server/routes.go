package server

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/login"
)

// adminName names the admin API caller in audit details.
func adminName(r *http.Request) string { return "admin API " + AdminFrom(r.Context()) }

// preflightDone ends an OPTIONS request the CORS middleware let through
// (a preflight from a foreign origin): nothing to say.
func preflightDone(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }

// Body caps. No route of this service takes more than a few kilobytes.
const (
	maxBody       = 64 << 10
	redisTimeout  = 3 * time.Second
	verifyTimeout = 50 * time.Second
)

// addRoutes lists every route of the service. The route table is pinned by
// TestRoutes.
func addRoutes(r chi.Router, d Deps) {
	m := newMetrics(d.Registry)
	r.Use(httpx.RequestContext(d.Config.TrustedProxies))
	r.Use(middleware.Recoverer)
	r.Use(observe(d.Log, m, d.Now))
	r.Use(securityHeaders)
	r.Use(httpx.LimitBody(maxBody))

	// Public: liveness, readiness, keys, metrics.
	r.Group(func(r chi.Router) {
		r.Get("/healthz", handleHealthz())
		r.With(withTimeout(redisTimeout)).Get("/readyz", handleReadyz(d.Log, d.Store))
		r.Get("/.well-known/jwks.json", handleJWKS(d.Keys))
		r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(d.Registry, promhttp.HandlerOpts{}))
	})

	// Forest action: the legacy and the new agents' paths, each with its form
	// hooks; CORS for the admin panel's origins.
	r.Group(func(r chi.Router) {
		r.Use(httpx.CORS(d.Config.AllowedOrigins, http.MethodPost))
		r.Use(withTimeout(redisTimeout))
		mint := action.Handler(action.Options{
			Log:       d.Log,
			Auth:      action.NewAuthenticator(d.Config.ForestAuthSecret.Reveal(), d.Now),
			EnvSecret: d.Config.ForestEnvSecret.Reveal(),
			Policy:    d.Policy,
			Store:     d.Store,
			Issuer:    d.Issuer,
			TokenTTL:  d.Config.TokenTTL,
			Delivery:  d.Config.Delivery,
			PublicURL: d.Config.PublicURL,
			AppURL:    d.Config.AppURL,
			Now:       d.Now,
		})
		hooks := action.HooksHandler()
		for _, p := range []string{"/forest/actions/impersonate", "/forest/_actions/{collection}/{index}/impersonate"} {
			r.Post(p, mint.ServeHTTP)
			r.Options(p, preflightDone)
			for _, hook := range []string{"/hooks/load", "/hooks/change"} {
				r.Post(p+hook, hooks.ServeHTTP)
				r.Options(p+hook, preflightDone)
			}
		}
	})

	// Login: redeem (from the admin panel's origins), the session for the
	// customer app (from its origin, and forward-auth), the start page and
	// the banner.
	lh := login.New(login.Options{
		Log:         d.Log,
		Store:       d.Store,
		Issuer:      d.Issuer,
		Verifier:    d.Verifier,
		Now:         d.Now,
		PublicURL:   d.Config.PublicURL,
		AppURL:      d.Config.AppURL,
		Delivery:    d.Config.Delivery,
		SessionTTL:  d.Config.SessionTTL,
		SessionIdle: d.Config.SessionIdle,
		LoginRate:   d.Config.LoginRate,
	})
	r.Group(func(r chi.Router) {
		r.Use(httpx.CORS(d.Config.AllowedOrigins, http.MethodPost))
		r.Use(withTimeout(redisTimeout))
		r.Post("/impersonation/login", lh.Login)
		r.Options("/impersonation/login", preflightDone)
	})
	r.Group(func(r chi.Router) {
		r.Use(httpx.CORS([]string{lh.AppOrigin()}, http.MethodGet, http.MethodPost))
		r.Use(withTimeout(redisTimeout))
		r.Get("/impersonation/session", lh.Session)
		r.Options("/impersonation/session", preflightDone)
		r.Post("/impersonation/logout", lh.Logout)
		r.Options("/impersonation/logout", preflightDone)
	})
	r.Get("/impersonation/start", lh.Start)
	r.Get("/impersonation/start.js", lh.StartJS)
	r.Get("/impersonation/banner.js", lh.Banner)

	// Admin API: bearer tokens from IMPERSONATOR_ADMIN_TOKENS.
	r.Route("/v1", func(r chi.Router) {
		r.Use(requireAdmin(d.Config.AdminTokens))
		short := r.With(withTimeout(redisTimeout))
		short.Get("/sessions", lh.ListSessions)
		short.Delete("/sessions", lh.RevokeSessions(adminName))
		short.Delete("/sessions/{id}", lh.RevokeSession(adminName))
		auditLog := d.AuditLog()
		short.Get("/audit/events", audit.EventsHandler(auditLog))
		// Verification reads the whole log: a longer bound (the CLI has none).
		r.With(withTimeout(verifyTimeout)).Get("/audit/verify", audit.VerifyHandler(auditLog, d.Keys))
	})

	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	})
}
