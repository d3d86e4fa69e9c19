package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/login"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
)

// adminName names the admin API caller in audit details.
func adminName(r *http.Request) string { return "admin API " + AdminFrom(r.Context()) }

// preflightDone ends an OPTIONS request the CORS middleware let through
// (a preflight from a foreign origin): nothing to say.
func preflightDone(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }

// Body cap and timeouts. No route of this service takes more than a few
// kilobytes; routes that touch Redis are bounded in time.
const (
	maxBody       = 64 << 10
	redisTimeout  = 3 * time.Second
	verifyTimeout = 50 * time.Second
)

// addRoutes lists every route of the service. The route table is pinned by
// TestRoutes.
func addRoutes(r chi.Router, d Deps) {
	s := d.Settings
	m := d.Metrics
	r.Use(httpx.RequestContext(s.TrustedProxies))
	r.Use(observe(d.Log, m, d.Now))
	r.Use(recoverer(d.Log, m))
	r.Use(securityHeaders)
	r.Use(httpx.LimitBody(maxBody))

	events := audit.Encoder{Now: d.Now}
	panics := func() { m.panics.Inc() }
	forest := httpx.Adapter{Log: d.Log, Shape: action.ForestShape, OnPanic: panics}
	plain := httpx.Adapter{Log: d.Log, Shape: httpx.JSONShape, OnPanic: panics}

	// Public: liveness, readiness, keys, metrics, the API's description.
	r.Group(func(r chi.Router) {
		r.Get("/healthz", handleHealthz())
		r.With(withTimeout(readyTimeout)).Method(http.MethodGet, "/readyz", plain.Handle(handleReadyz(d.Store, d.Ready)))
		r.Get("/.well-known/jwks.json", handleJWKS(d.Keys))
		r.Head("/.well-known/jwks.json", handleJWKS(d.Keys)) // the same headers as GET; no body
		r.Get("/openapi.yaml", handleOpenAPI())
		if !s.MetricsElsewhere {
			r.Method(http.MethodGet, "/metrics", MetricsHandler(m))
		}
	})

	// Forest action: the legacy and the new agents' paths, each with its form
	// hooks; CORS for the admin panel's origins.
	r.Group(func(r chi.Router) {
		r.Use(httpx.CORS(s.AllowedOrigins, http.MethodPost))
		r.Use(withTimeout(redisTimeout))
		mint := forest.Handle(action.Handler(action.Options{
			Log:       d.Log,
			Auth:      action.NewAuthenticator(s.ForestAuthSecret.Reveal(), d.Now),
			EnvSecret: s.ForestEnvSecret.Reveal(),
			Policies:  d.Policies,
			Store:     d.Store,
			Issuer:    d.Issuer,
			Events:    events,
			TokenTTL:  s.TokenTTL,
			Delivery:  s.Delivery,
			PublicURL: s.PublicURL,
			AppURL:    s.AppURL,
			Now:       d.Now,
			Folded:    func() { m.foldedDenials.Inc() },
		}))
		// Impersonation history: the record's impersonations for a reviewer.
		forestAuth := action.NewAuthenticator(s.ForestAuthSecret.Reveal(), d.Now)
		hooks := forest.Handle(action.HooksHandler(forestAuth, d.Policies.Load))
		history := forest.Handle(action.HistoryHandler(action.HistoryOptions{
			Log: d.Log, Auth: forestAuth, Policies: d.Policies, Store: d.Store,
			History: audit.NewLog(d.Store, d.Now), Live: liveSession(d.Store), Requests: activityCounts(d), Events: events,
		}))
		historyHooks := forest.Handle(action.HistoryHooksHandler(forestAuth))
		for _, p := range []string{"/forest/actions/impersonation-history", "/forest/_actions/{collection}/{index}/impersonation-history"} {
			r.Method(http.MethodPost, p, history)
			r.Options(p, preflightDone)
			for _, hook := range []string{"/hooks/load", "/hooks/change"} {
				r.Method(http.MethodPost, p+hook, historyHooks)
				r.Options(p+hook, preflightDone)
			}
		}
		for _, p := range []string{"/forest/actions/impersonate", "/forest/_actions/{collection}/{index}/impersonate"} {
			r.Method(http.MethodPost, p, mint)
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
	cookie := session.NewCookie(s.PublicURL, s.Delivery)
	sessions := session.New(session.Options{
		Log: d.Log, Store: d.Store, Verifier: d.Verifier, Cookie: cookie, Events: events, Now: d.Now,
		Origins:  []string{session.Origin(s.AppURL), session.Origin(s.PublicURL)},
		Unused:   func() { m.unused.Inc() },
		Cache:    d.SessionCache,
		Activity: d.Activity,
	})
	lh := login.New(login.Options{
		Log: d.Log, Store: d.Store, Issuer: d.Issuer, Verifier: d.Verifier, Cookie: cookie, Sessions: sessions, Events: events,
		PublicURL: s.PublicURL, AppURL: s.AppURL, SessionTTL: s.SessionTTL, SessionIdle: s.SessionIdle,
		Unused: s.SessionUnused, LoginRate: s.LoginRate,
	})
	r.Group(func(r chi.Router) {
		r.Use(httpx.CORS(s.AllowedOrigins, http.MethodPost))
		r.Use(withTimeout(redisTimeout))
		r.Method(http.MethodPost, "/impersonation/login", plain.Handle(lh.Login))
		r.Options("/impersonation/login", preflightDone)
	})
	r.Group(func(r chi.Router) {
		r.Use(httpx.CORS([]string{session.Origin(s.AppURL)}, http.MethodGet, http.MethodPost))
		// The session check bounds its own Redis calls (most checks make
		// none: the session cache), so no per-request timer here.
		r.Method(http.MethodGet, "/impersonation/session", plain.Handle(sessions.Session))
		r.Options("/impersonation/session", preflightDone)
		r.With(withTimeout(redisTimeout)).Method(http.MethodPost, "/impersonation/logout", plain.Handle(sessions.Logout))
		r.Options("/impersonation/logout", preflightDone)
	})
	r.Get("/impersonation/start", lh.Start)
	r.Get("/impersonation/start.js", login.StartJS)
	r.Get("/impersonation/banner.js", session.Banner)

	// Admin API: bearer tokens from IMPERSONATOR_ADMIN_TOKENS.
	r.Route("/v1", func(r chi.Router) {
		r.Use(requireAdmin(s.AdminTokens))
		short := r.With(withTimeout(redisTimeout))
		revoker := session.Revoker{Store: d.Store, Events: events, Cache: d.SessionCache, Activity: d.Activity}
		short.Method(http.MethodGet, "/sessions", plain.Handle(session.ListHandler(d.Store)))
		short.Method(http.MethodDelete, "/sessions", plain.Handle(revoker.RevokeAllHandler(adminName)))
		short.Method(http.MethodDelete, "/sessions/{id}", plain.Handle(revoker.RevokeHandler(adminName)))
		short.Method(http.MethodGet, "/sessions/{id}/activity", plain.Handle(session.ActivityHandler(d.Store)))
		auditLog := audit.NewLog(d.Store, d.Now)
		short.Method(http.MethodGet, "/audit/events", plain.Handle(audit.EventsHandler(auditLog, kindedID(d.Policies))))
		// Extensions: the customer's consent, and their own history.
		consents := session.Consents{Store: d.Store, Revoker: revoker, Events: events, Now: d.Now,
			Subject: kindedSubject(d.Policies, session.PathSubject)}
		short.Method(http.MethodPut, "/consents/{collection}/{id}", plain.Handle(consents.Put(adminName)))
		short.Method(http.MethodGet, "/consents/{collection}/{id}", plain.Handle(consents.Get()))
		short.Method(http.MethodDelete, "/consents/{collection}/{id}", plain.Handle(consents.Delete(adminName)))
		short.Method(http.MethodGet, "/subjects/{collection}/{id}/history",
			plain.Handle(audit.HistoryHandler(auditLog, kindedSubject(d.Policies, session.PathSubject), liveSession(d.Store), activityCounts(d))))
		// Verification reads the whole log: a longer bound (the CLI has none).
		r.With(withTimeout(verifyTimeout)).Method(http.MethodGet, "/audit/verify",
			plain.Handle(audit.VerifyHandler(auditLog, d.Keys, audit.VerifyOptions{MaxUncovered: 2 * s.CheckpointInterval}, d.AuditMemory)))
	})

	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	})
}

// liveSession reports whether a session is live, for the history.
func liveSession(st *store.Store) func(context.Context, string) (bool, error) {
	return func(ctx context.Context, sid string) (bool, error) {
		_, err := st.GetSession(ctx, sid)
		if errors.Is(err, store.ErrNoSession) {
			return false, nil
		}
		return err == nil, err
	}
}

// activityCounts reads the sessions' activity counts for the histories,
// or is nil when the activity trail is off.
func activityCounts(d Deps) func(context.Context, []string) ([]int64, error) {
	if d.Activity == nil {
		return nil
	}
	return d.Store.ActivityCounts
}

// MetricsHandler serves m's registry (on the public listener, or on
// IMPERSONATOR_METRICS_LISTEN's own).
func MetricsHandler(m *Metrics) http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
