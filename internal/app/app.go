// Package app assembles the service once, for `impersonator serve`,
// `impersonator demo` and tools/demo: configuration → store → keys →
// handlers → background workers, run on an errgroup and shut down in order
// (drain, stop accepting, let requests finish, stop the workers, write a
// last audit checkpoint, close the store).
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/notify"
	"github.com/impersonator/impersonator/internal/server"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// Options are New's optional settings.
type Options struct {
	// Log receives the service's log; by default one built from the
	// configuration (format, level) writing to Stderr.
	Log    *slog.Logger
	Stderr io.Writer
	// Policy is the policy in force at start (LoadPolicy of the
	// configuration's file); the default policy when nil.
	Policy *action.Policy
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Announce is called with each address the service listens on, once it
	// accepts connections ("http", "metrics").
	Announce func(name, addr string)
	// SIGHUP reloads the keys and the policy on SIGHUP (serve does).
	SIGHUP bool
	// Version is reported by the impersonator_build_info gauge.
	Version, Commit string
	// EvictionPoll is how often Redis's maxmemory-policy is read again;
	// DefaultEvictionPoll when 0.
	EvictionPoll time.Duration
}

// DefaultEvictionPoll is how often a running service looks at Redis's
// maxmemory-policy again (it is read at start too).
const DefaultEvictionPoll = time.Minute

// App is the assembled service.
type App struct {
	cfg      *config.Config
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	store    *store.Store
	keys     *token.Keyset
	metrics  *server.Metrics
	ready    *server.Readiness
	handler  http.Handler
	auditLog *audit.Log
	cp       audit.Checkpointer
	workers  []worker
	eviction *prometheus.GaugeVec
}

// worker is one background task, run until its context ends.
type worker struct {
	name string
	run  func(ctx context.Context)
}

// New builds the service from cfg: it opens the store (and checks what it
// can of it), loads the keys (generating a development key with the
// embedded Redis), and builds the handler and the background workers. The
// caller runs it with Serve and releases it with Close.
func New(ctx context.Context, cfg *config.Config, opts Options) (_ *App, err error) {
	a := &App{cfg: cfg, opts: opts, log: opts.Log, now: opts.Now, ready: &server.Readiness{}}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = NewLogger(cfg, opts.Stderr)
	}
	if a.opts.Policy == nil {
		a.opts.Policy = action.DefaultPolicy()
	}
	if opts.EvictionPoll <= 0 {
		a.opts.EvictionPoll = DefaultEvictionPoll
	}
	log := a.log
	// go-redis's own log lines go through slog, so the log stays JSON.
	redis.SetLogger(RedisLogger{Log: log})
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if len(cfg.AdminTokens) == 0 {
		log.Info("IMPERSONATOR_ADMIN_TOKENS is not set: the /v1 admin API answers 403")
	}

	if a.store, err = store.Open(cfg.RedisURL.Reveal(), store.Options{Now: a.now, ReplicaAck: cfg.ReplicaAck}); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.store.Close()
		}
	}()
	a.metrics = server.NewMetrics(nil)
	a.registerMetrics()
	if addr := a.store.EmbeddedAddr(); addr != "" {
		log.Warn("REDIS_URL is empty: using an EMBEDDED IN-PROCESS Redis that keeps NOTHING across restarts (tokens, sessions and the audit log are lost); for development only; the CLI reaches it with REDIS_URL=redis://"+addr,
			"addr", addr)
	} else {
		a.checkRedis(ctx)
	}

	keys, created, err := loadKeys(cfg, a.store.EmbeddedAddr() != "", a.now, token.WithLogger(log))
	if err != nil {
		return nil, err
	}
	a.keys = keys
	if created != nil {
		log.Warn("keys folder was empty: generated a development signing key", "key", created, "dir", cfg.KeysDir)
	}
	log.Info("signing keys loaded", "signer", keys.Signer(), "count", len(keys.Keys()))
	if err := a.devForestSecret(); err != nil {
		return nil, err
	}

	if err := a.build(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// devForestSecret gives a first run without FOREST_AUTH_SECRET a random
// development secret, with the embedded Redis only (never with REDIS_URL):
// kept beside the development key, where `impersonator dev forest-jwt`
// finds it.
func (a *App) devForestSecret() error {
	cfg := a.cfg
	if cfg.ForestAuthSecret != "" {
		return nil
	}
	if a.store.EmbeddedAddr() == "" {
		a.log.Warn("FOREST_AUTH_SECRET is not set: the Forest action routes answer 503 until it is")
		return nil
	}
	secret, created, err := DevForestSecret(cfg.KeysDir)
	if err != nil {
		return fmt.Errorf("FOREST_AUTH_SECRET is not set and the development secret cannot be kept in %s: %w", cfg.KeysDir, err)
	}
	path := filepath.Join(cfg.KeysDir, DevForestSecretFile)
	verb := "using"
	if created {
		verb = "generated"
	}
	a.log.Warn("FOREST_AUTH_SECRET is not set: "+verb+" a random DEVELOPMENT secret in "+path+
		" (embedded Redis only; never with REDIS_URL); `impersonator dev forest-jwt` signs with it; the real Forest UI signs with your project's secret: set FOREST_AUTH_SECRET to it",
		"file", path)
	cfg.ForestAuthSecret = config.Secret(secret)
	return nil
}

// build makes the handler and the background workers.
func (a *App) build(ctx context.Context) error {
	cfg, log, st, keys, now, metrics := a.cfg, a.log, a.store, a.keys, a.now, a.metrics
	// What this instance sees of the audit chain, recovered from the
	// witness file across a restart (README, "Audit log").
	memory, err := audit.OpenMemory(cfg.AuditWitness)
	if err != nil {
		return fmt.Errorf("IMPERSONATOR_AUDIT_WITNESS: %w", err)
	}
	metrics.SetAlarm(memory.Alarm() != "")
	sessionCache := session.NewCache(cfg.SessionIdle)
	// The activity trail: buffered by the session check, written every
	// DefaultFlushInterval by its own worker (below).
	activity := session.NewRecorder(st, log.With("component", "activity"), session.DefaultFlushInterval)
	policies := action.NewPolicyHolder(a.opts.Policy)
	a.handler = server.New(server.Deps{
		SessionCache: sessionCache,
		Activity:     activity,
		Log:          log,
		Settings:     server.SettingsFrom(cfg),
		Store:        st,
		Keys:         keys,
		Issuer:       token.NewIssuer(keys, cfg.PublicURL, cfg.Audience, now),
		Verifier:     token.NewVerifier(keys, cfg.PublicURL, cfg.Audience, now),
		Now:          now,
		Policies:     policies,
		Metrics:      metrics,
		Ready:        a.ready,
		AuditMemory:  memory,
	})

	// Background work, off the request path: signed audit checkpoints, the
	// sweeper that records the end of sessions nobody touches again, key
	// reloads, the store's eviction check, and notifications (never on the
	// request path: a slow receiver cannot delay a mint or a login).
	a.auditLog = audit.NewLog(st, now)
	a.cp = audit.Checkpointer{Log: log, Signer: keys, Interval: cfg.CheckpointInterval, Retention: cfg.AuditRetention,
		Memory: memory, Alarm: metrics.SetAlarm}
	sessions := session.New(session.Options{Log: log, Store: st, Events: audit.Encoder{Now: now}, Now: now, Unused: metrics.CountUnused, Activity: activity})
	host, _ := os.Hostname()
	sweeper := session.Sweeper{Store: st, Sessions: sessions, Owner: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), token.NewJTI()),
		Interval: cfg.SweepInterval}
	// The policy reloads (SIGHUP, and when its file changes), and applies
	// to live sessions: those it now refuses are revoked.
	revoker := session.Revoker{Store: st, Events: audit.Encoder{Now: now}, Cache: sessionCache, Activity: activity}
	// A consent that lapses by its until ends the record's live sessions,
	// as a withdrawal does: the sweeper looks for lapses too.
	sweeper.Consents = &session.Consents{Store: st, Revoker: revoker, Events: audit.Encoder{Now: now}, Now: now}
	sweeper.ConsentDue = st
	reloader := &action.Reloader{Path: cfg.PolicyFile, Holder: policies, Log: log.With("component", "policy"),
		Interval: cfg.PolicyPoll, Recheck: cfg.TokenTTL + token.Leeway, Store: st, OnResult: metrics.PolicyReloaded,
		Revoke: func(ctx context.Context, sess store.Session, detail string) error {
			return revoker.RevokeSession(ctx, sess, session.RequestInfo{RequestID: "policy reload"}, detail)
		}}
	a.workers = []worker{
		{"checkpoint", func(ctx context.Context) { a.cp.Run(ctx, a.auditLog) }},
		{"sweeper", sweeper.Run},
		{"session cache", func(ctx context.Context) { sessionCache.Run(ctx, st, log) }},
		// The activity trail's writer: stopped after the last request, it
		// writes what is left.
		{"activity", activity.Run},
		// Keys reload without a restart: every 30 s, and at once on SIGHUP
		// (so does the policy file).
		{"keys", func(ctx context.Context) { keys.Watch(ctx, token.DefaultWatchInterval) }},
	}
	if st.EmbeddedAddr() == "" {
		a.workers = append(a.workers, worker{"eviction", a.watchEviction})
	}
	if cfg.PolicyFile != "" {
		a.workers = append(a.workers, worker{"policy", reloader.Run})
	}
	if a.opts.SIGHUP {
		a.workers = append(a.workers, worker{"sighup", func(ctx context.Context) {
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					if err := keys.Reload(); err != nil {
						log.Error("SIGHUP: keys reload failed; the previous keys stay in use", "error", err)
					} else {
						log.Info("SIGHUP: keys reloaded", "signer", keys.Signer(), "count", len(keys.Keys()))
					}
					if cfg.PolicyFile != "" {
						_ = reloader.Reload(ctx, "SIGHUP") // logs and counts its own failure
					}
				}
			}
		}})
	}
	if cfg.Notify.Enabled() {
		n, err := notify.New(notify.Options{Config: cfg.Notify, Store: st,
			Metrics: notify.NewMetrics(metrics.Registry), Log: log.With("component", "notify")})
		if err != nil {
			return err
		}
		// The group starts at the stream's end: create it before the first
		// request, or that request's events would never be notified.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = n.Prepare(pctx)
		cancel()
		if err != nil {
			log.Error("notify: cannot create the consumer group yet; events until it exists are not notified", "error", err)
		}
		a.workers = append(a.workers, worker{"notify", n.Run})
	}
	return nil
}

// Handler is the service's HTTP handler.
func (a *App) Handler() http.Handler { return a.handler }

// Store is the service's store.
func (a *App) Store() *store.Store { return a.store }

// Keys is the service's keyset.
func (a *App) Keys() *token.Keyset { return a.keys }

// Log is the service's log.
func (a *App) Log() *slog.Logger { return a.log }

// Metrics are the service's metrics.
func (a *App) Metrics() *server.Metrics { return a.metrics }

// Close releases the store.
func (a *App) Close() error { return a.store.Close() }

// Serve serves ln (and metricsLn, when not nil, for /metrics alone) and
// runs the background workers until ctx ends or a listener fails. Then, in
// order: /readyz answers 503 while every route is still served for the
// configured drain, the listeners stop accepting and in-flight requests get
// the shutdown timeout to finish, the workers stop, and a last audit
// checkpoint covers what this instance saw. It returns nil after a clean
// shutdown.
func (a *App) Serve(ctx context.Context, ln, metricsLn net.Listener) error {
	log := a.log
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      60 * time.Second, // /v1/audit/verify may take up to 50s
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	servers := []*http.Server{srv}
	var msrv *http.Server
	if metricsLn != nil {
		msrv = &http.Server{Handler: server.MetricsHandler(a.metrics), ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, msrv) // after the main listener: scraped while it drains
	}

	// The workers outlive the listeners: requests still in flight may need
	// the session cache, and the last checkpoint must follow the last event.
	bg, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	var workers errgroup.Group
	for _, w := range a.workers {
		workers.Go(func() error {
			w.run(bg)
			return nil
		})
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve(srv, ln) })
	if msrv != nil {
		g.Go(func() error { return serve(msrv, metricsLn) })
		log.Info("metrics listening", "addr", metricsLn.Addr().String())
		a.announce("metrics", metricsLn.Addr().String())
	}
	log.Info("listening", "addr", ln.Addr().String(), "public_url", a.cfg.PublicURL, "app_url", a.cfg.AppURL,
		"delivery", string(a.cfg.Delivery), "version", a.opts.Version)
	a.announce("http", ln.Addr().String())

	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil { // asked to stop, not a listener failing
			a.drain()
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
		defer cancel()
		var errs []error
		for _, s := range servers {
			if err := s.Shutdown(sctx); err != nil {
				errs = append(errs, fmt.Errorf("shutdown: %w (requests still running after IMPERSONATOR_SHUTDOWN_TIMEOUT %s)", err, a.cfg.ShutdownTimeout))
				_ = s.Close()
			}
		}
		return errors.Join(errs...)
	})
	err := g.Wait()

	stopWorkers()
	_ = workers.Wait()
	// Cover what this instance saw last before it goes.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	a.cp.Once(fctx, a.auditLog)
	cancel()
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// drain makes /readyz answer 503 and keeps serving for the drain period, so
// that load balancers stop sending before the listener closes.
func (a *App) drain() {
	a.ready.Drain()
	d := a.cfg.ShutdownDrain
	a.log.Info("shutting down: /readyz answers 503; still serving while load balancers notice", "drain", d.String(),
		"timeout", a.cfg.ShutdownTimeout.String())
	if d > 0 {
		time.Sleep(d)
	}
	a.log.Info("shutting down: no longer accepting connections; waiting for requests in flight")
}

func serve(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (a *App) announce(name, addr string) {
	if a.opts.Announce != nil {
		a.opts.Announce(name, addr)
	}
}

// NewLogger is the service's log, as configured, on w.
func NewLogger(c *config.Config, w io.Writer) *slog.Logger {
	if w == nil {
		w = os.Stderr
	}
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// RedisLogger sends go-redis's internal log lines to slog.
type RedisLogger struct{ Log *slog.Logger }

// Printf logs one go-redis line as a warning, but for the Sentinel
// client's news that are no problem: which primary it found (info: a
// failover shows there) and which sentinels it discovered (debug).
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	level := slog.LevelWarn
	switch {
	case strings.HasPrefix(format, "sentinel: new master="):
		level = slog.LevelInfo
	case strings.HasPrefix(format, "sentinel: discovered new sentinel="), strings.HasPrefix(format, "sentinel: selected addr="):
		level = slog.LevelDebug
	}
	l.Log.Log(ctx, level, "redis client: "+fmt.Sprintf(format, v...))
}

// loadKeys loads the keys folder. In development (embedded Redis) an empty
// folder gets a new key; in production it is an error, because instances
// that each generated their own key would refuse each other's tokens.
func loadKeys(cfg *config.Config, development bool, now func() time.Time, opts ...token.Option) (*token.Keyset, *token.Key, error) {
	if development {
		return token.LoadOrCreate(cfg.KeysDir, now(), opts...)
	}
	ks, err := token.LoadDir(cfg.KeysDir, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (with REDIS_URL set no key is generated for you: run `impersonator keys generate --dir %s` and share the folder with every instance)", err, cfg.KeysDir)
	}
	return ks, nil, nil
}
