// Package server assembles impersonator's HTTP handler: every route, in
// routes.go, with its middleware and its error boundary.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// Settings are the configuration values the routes use.
type Settings struct {
	PublicURL        string
	AppURL           string
	AllowedOrigins   []string
	TrustedProxies   []netip.Prefix
	AdminTokens      []config.Secret
	ForestAuthSecret config.Secret
	ForestEnvSecret  config.Secret
	Delivery         config.Delivery
	TokenTTL         time.Duration
	SessionTTL       time.Duration
	SessionIdle      time.Duration
	// SessionUnused ends a session never presented within it (webhook
	// delivery); 0 off.
	SessionUnused time.Duration
	LoginRate     config.Rate
	// CheckpointInterval: verify flags events older than twice it that no
	// checkpoint covers.
	CheckpointInterval time.Duration
	// MetricsElsewhere: /metrics is served on its own listener, not here.
	MetricsElsewhere bool
}

// SettingsFrom picks the routes' settings out of the configuration.
func SettingsFrom(c *config.Config) Settings {
	s := Settings{
		PublicURL: c.PublicURL, AppURL: c.AppURL, AllowedOrigins: c.AllowedOrigins, TrustedProxies: c.TrustedProxies,
		AdminTokens: c.AdminTokens, ForestAuthSecret: c.ForestAuthSecret, ForestEnvSecret: c.ForestEnvSecret,
		Delivery: c.Delivery, TokenTTL: c.TokenTTL, SessionTTL: c.SessionTTL, SessionIdle: c.SessionIdle,
		LoginRate: c.LoginRate, CheckpointInterval: c.CheckpointInterval, MetricsElsewhere: c.MetricsListen != "",
	}
	if c.Delivery == config.Webhook {
		s.SessionUnused = c.SessionUnused
	}
	return s
}

// Deps is everything the handlers need. The caller (run) builds it.
type Deps struct {
	Log      *slog.Logger
	Settings Settings
	Store    *store.Store
	Keys     *token.Keyset
	Issuer   *token.Issuer
	Verifier *token.Verifier
	Now      func() time.Time
	// Policy says who may impersonate whom; the default policy when nil.
	Policy *action.Policy
	// Policies, when set, holds the policy in force (it reloads) and
	// replaces Policy.
	Policies *action.PolicyHolder
	// Metrics receives the service's metrics; NewMetrics(nil) when nil.
	Metrics *Metrics
	// SessionCache, when set (and running), serves live sessions from
	// memory, invalidated through Redis pub/sub; nil checks Redis always.
	SessionCache *session.Cache
	// AuditMemory, when set, is what the checkpointer has seen of the
	// chain: /v1/audit/verify uses it as a witness and names its alarm.
	AuditMemory *audit.Memory
	// Ready, when set, lets the caller make /readyz answer 503 (draining,
	// an evicting Redis); nil: /readyz reports Redis alone.
	Ready *Readiness
	// Activity, when set (and running), records the activity trail of
	// impersonated sessions; nil records none.
	Activity *session.Recorder
}

// New returns the service's handler.
func New(d Deps) http.Handler {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Policy == nil {
		d.Policy = action.DefaultPolicy()
	}
	if d.Policies == nil {
		d.Policies = action.NewPolicyHolder(d.Policy)
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(nil)
	}
	r := chi.NewRouter()
	addRoutes(r, d)
	return r
}

// Metrics are the service's Prometheus metrics.
type Metrics struct {
	Registry      *prometheus.Registry
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	panics        prometheus.Counter
	foldedDenials prometheus.Counter
	unused        prometheus.Counter
	// alarm is 1 while the audit checkpointer refuses to sign, under the
	// name of the issue (impersonator_…) and the name of DESIGN.md 3.7
	// (impersonation_…); SetAlarm sets both.
	alarm, alarmDesign prometheus.Gauge
	// PolicyReloadErrors counts policy reloads that failed (the previous
	// policy stayed); PolicyStale is 1 while the last one failed.
	PolicyReloadErrors prometheus.Counter
	PolicyStale        prometheus.Gauge
}

// SetAlarm sets the audit integrity alarm (true: the checkpointer refuses
// to sign).
func (m *Metrics) SetAlarm(on bool) {
	v := 0.0
	if on {
		v = 1
	}
	m.alarm.Set(v)
	m.alarmDesign.Set(v)
}

// NewMetrics registers the service's metrics (and the Go runtime's) in reg,
// a fresh registry when nil.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "impersonator_http_requests_total",
			Help: "HTTP requests by route pattern, method (a fixed set) and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "impersonator_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "impersonator_http_panics_total", Help: "Handler panics, each answered with a JSON 500.",
		}),
		foldedDenials: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "impersonator_denials_folded_total", Help: "Denials past an admin's per-minute allowance, counted instead of recorded one by one.",
		}),
		unused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "impersonator_sessions_unused_total", Help: "Sessions ended because no request ever presented them (a blocked third-party cookie, usually).",
		}),
		alarm: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "impersonator_audit_integrity_alarm", Help: "1 while the audit checkpointer refuses to sign what it sees (see the log), else 0.",
		}),
		alarmDesign: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "impersonation_audit_integrity_alarm", Help: "The same as impersonator_audit_integrity_alarm, under DESIGN.md 3.7's name.",
		}),
		PolicyReloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "impersonator_policy_reload_errors_total", Help: "Policy file reloads that failed to read or parse; the previous policy stayed in force.",
		}),
		PolicyStale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "impersonator_policy_stale", Help: "1 while the last policy reload failed (the policy in force is older than the file), else 0.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.panics, m.foldedDenials, m.unused, m.alarm, m.alarmDesign, m.PolicyReloadErrors, m.PolicyStale)
	return m
}

// PolicyReloaded records a policy reload's outcome.
func (m *Metrics) PolicyReloaded(err error) {
	if err != nil {
		m.PolicyReloadErrors.Inc()
		m.PolicyStale.Set(1)
		return
	}
	m.PolicyStale.Set(0)
}

// CountUnused counts a session ended as never used.
func (m *Metrics) CountUnused() { m.unused.Inc() }

// methodLabel bounds the method label: a client chooses the method, and an
// invented one must not make a new series.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodPatch:
		return m
	}
	return "other"
}

// codeLabel is the status code as a label, without allocating for the
// common ones.
func codeLabel(status int) string {
	switch status {
	case http.StatusOK:
		return "200"
	case http.StatusNoContent:
		return "204"
	case http.StatusSeeOther:
		return "303"
	case http.StatusUnauthorized:
		return "401"
	}
	return strconv.Itoa(status)
}

// statusRecorder remembers the status written.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// SetStatus records a status that was not written (499: the client left).
func (s *statusRecorder) SetStatus(code int) {
	if s.status == 0 {
		s.status = code
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// observe logs one record per request (with request id and client IP) and
// feeds the metrics. Labels are bounded: the route is chi's pattern or
// "unmatched", the method one of a fixed set.
func observe(log *slog.Logger, m *Metrics, now func() time.Time) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := now()
			rec := &statusRecorder{ResponseWriter: w}
			defer func() {
				if rec.status == 0 {
					rec.status = http.StatusOK
				}
				elapsed := now().Sub(start)
				route := "unmatched"
				if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
					route = rc.RoutePattern()
				}
				m.requests.WithLabelValues(route, methodLabel(r.Method), codeLabel(rec.status)).Inc()
				m.duration.WithLabelValues(route).Observe(elapsed.Seconds())
				if !log.Enabled(r.Context(), slog.LevelDebug) {
					return // the attributes below would be built for nothing
				}
				log.LogAttrs(r.Context(), slog.LevelDebug, "request",
					slog.String("request_id", httpx.RequestID(r.Context())),
					slog.String("ip", httpx.ClientIP(r.Context())),
					slog.String("method", r.Method),
					slog.String("route", route),
					slog.Int("status", rec.status),
					slog.Duration("duration", elapsed),
				)
			}()
			next.ServeHTTP(rec, r)
		})
	}
}

// recoverer answers a panic outside the adapters (metrics, static files)
// with a JSON 500, logs it and counts it. It sits inside observe, so the
// request is still counted and logged.
func recoverer(log *slog.Logger, m *Metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if p := recover(); p != nil {
					if p == http.ErrAbortHandler {
						panic(p)
					}
					m.panics.Inc()
					httpx.Log(log, r, &httpx.Error{Status: http.StatusInternalServerError, Message: "internal error",
						Cause: fmt.Errorf("panic: %v\n%s", p, debug.Stack())})
					httpx.WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// withTimeout bounds the work of routes that touch Redis.
func withTimeout(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// securityHeaders are sent on every answer: this service serves no content
// meant to be framed, sniffed or cached.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Content-Type-Options"] = hvNosniff
		h["X-Frame-Options"] = hvDeny
		h["Referrer-Policy"] = hvNoReferrer
		next.ServeHTTP(w, r)
	})
}

// The security headers' values, shared rather than allocated per answer;
// nothing appends to or edits them in place.
var (
	hvNosniff    = []string{"nosniff"}
	hvDeny       = []string{"DENY"}
	hvNoReferrer = []string{"no-referrer"}
)
