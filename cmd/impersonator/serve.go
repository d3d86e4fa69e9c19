package main

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
	"runtime/debug"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/notify"
	"github.com/impersonator/impersonator/internal/server"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

func newLogger(c *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

type listeningKey struct{}

// withListening makes serve call fn with each address it listens on, once
// it accepts connections (tests use :0 and learn the port here).
func withListening(ctx context.Context, fn func(name, addr string)) context.Context {
	return context.WithValue(ctx, listeningKey{}, fn)
}

func announce(ctx context.Context, name, addr string) {
	if fn, ok := ctx.Value(listeningKey{}).(func(string, string)); ok {
		fn(name, addr)
	}
}

// checkPolicy lets config list the policy file's problems with every other
// problem.
func checkPolicy(path string) []error {
	if _, err := action.LoadPolicy(path); err != nil {
		return []error{err}
	}
	return nil
}

// serveGOGC is the collector's target while serving, unless GOGC is set
// (the runtime has then applied it). The live heap is a few MB and each
// request allocates tens of KB, so under load Go's default of 100 collects
// dozens of times a second; 400 costs tens of MB and measured +7-12%
// requests per second with make loadtest.
const serveGOGC = 400

func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(serveGOGC)
	}
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.LoadWith(config.Options{CheckPolicy: checkPolicy}, args, getenv, stderr)
	if err != nil {
		return err
	}
	tuneGC()
	policy, err := action.LoadPolicy(cfg.PolicyFile)
	if err != nil {
		return &config.Error{Problems: []error{fmt.Errorf("IMPERSONATOR_POLICY_FILE: %w", err)}}
	}
	log := newLogger(cfg, stderr)
	// go-redis's own log lines go through slog, so the log stays JSON.
	redis.SetLogger(redisLogger{log})
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	now := time.Now
	if cfg.ForestAuthSecret == "" {
		log.Warn("FOREST_AUTH_SECRET is not set: the Forest action routes answer 503 until it is")
	}
	if len(cfg.AdminTokens) == 0 {
		log.Info("IMPERSONATOR_ADMIN_TOKENS is not set: the /v1 admin API answers 403")
	}

	st, err := store.Open(cfg.RedisURL.Reveal(), store.Options{Now: now, ReplicaAck: cfg.ReplicaAck})
	if err != nil {
		return err
	}
	defer st.Close()
	if addr := st.EmbeddedAddr(); addr != "" {
		log.Warn("REDIS_URL is empty: using an EMBEDDED IN-PROCESS Redis that keeps NOTHING across restarts (tokens, sessions and the audit log are lost); for development only; the CLI reaches it with REDIS_URL=redis://"+addr,
			"addr", addr)
	} else {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := st.Ping(pctx); err != nil {
			log.Error("redis does not answer yet; /readyz reports 503 and every mint and login fails closed until it does", "error", err)
		} else {
			if p := st.Persistence(pctx); p.Known && !p.Durable() {
				log.Warn("the connected Redis persists nothing to disk (appendonly no, no save points): a Redis restart loses the audit log; enable AOF (appendonly yes, appendfsync everysec)")
			}
			switch st.Replication(pctx) {
			case "none":
				log.Warn("the Redis primary has no replica: state changes are not waited on (IMPERSONATOR_REDIS_REPLICA_ACK applies once it has one); a lost primary loses what it did not persist")
			case "wait":
				log.Info("every state change waits for one replica's acknowledgement", "timeout", cfg.ReplicaAck)
			}
		}
		cancel()
	}

	keys, created, err := loadKeys(cfg, st.EmbeddedAddr() != "", now, token.WithLogger(log))
	if err != nil {
		return err
	}
	if created != nil {
		log.Warn("keys folder was empty: generated a development signing key", "key", created, "dir", cfg.KeysDir)
	}
	log.Info("signing keys loaded", "signer", keys.Signer(), "count", len(keys.Keys()))

	// What this instance sees of the audit chain, recovered from the
	// witness file across a restart (README, "Audit log").
	memory, err := audit.OpenMemory(cfg.AuditWitness)
	if err != nil {
		return fmt.Errorf("IMPERSONATOR_AUDIT_WITNESS: %w", err)
	}
	metrics := server.NewMetrics(nil)
	metrics.SetAlarm(memory.Alarm() != "")
	sessionCache := session.NewCache(cfg.SessionIdle)
	policies := action.NewPolicyHolder(policy)
	handler := server.New(server.Deps{
		SessionCache: sessionCache,
		Log:          log,
		Settings:     server.SettingsFrom(cfg),
		Store:        st,
		Keys:         keys,
		Issuer:       token.NewIssuer(keys, cfg.PublicURL, cfg.Audience, now),
		Verifier:     token.NewVerifier(keys, cfg.PublicURL, cfg.Audience, now),
		Now:          now,
		Policies:     policies,
		Metrics:      metrics,
		AuditMemory:  memory,
	})

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	var metricsLn net.Listener
	if cfg.MetricsListen != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("IMPERSONATOR_METRICS_LISTEN: %w", err)
		}
	}

	// Background work, off the request path: signed audit checkpoints, the
	// sweeper that records the end of sessions nobody touches again, key
	// reloads, and notifications (never on the request path: a slow
	// receiver cannot delay a mint or a login).
	var bgNotify func(ctx context.Context, done chan<- struct{})
	auditLog := audit.NewLog(st, now)
	cp := audit.Checkpointer{Log: log, Signer: keys, Interval: cfg.CheckpointInterval, Retention: cfg.AuditRetention,
		Memory: memory, Alarm: metrics.SetAlarm}
	sessions := session.New(session.Options{Log: log, Store: st, Events: audit.Encoder{Now: now}, Now: now, Unused: metrics.CountUnused})
	host, _ := os.Hostname()
	sweeper := session.Sweeper{Store: st, Sessions: sessions, Owner: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), token.NewJTI()),
		Interval: cfg.SweepInterval}
	// The policy reloads (SIGHUP, and when its file changes), and applies
	// to live sessions: those it now refuses are revoked.
	revoker := session.Revoker{Store: st, Events: audit.Encoder{Now: now}, Cache: sessionCache}
	reloader := &action.Reloader{Path: cfg.PolicyFile, Holder: policies, Log: log.With("component", "policy"),
		Interval: cfg.PolicyPoll, Recheck: cfg.TokenTTL + token.Leeway, Store: st, OnResult: metrics.PolicyReloaded,
		Revoke: func(ctx context.Context, sess store.Session, detail string) error {
			return revoker.RevokeSession(ctx, sess, session.RequestInfo{RequestID: "policy reload"}, detail)
		}}
	workers := 5
	if cfg.PolicyFile != "" {
		workers++
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
		workers++
		bgNotify = func(ctx context.Context, done chan<- struct{}) {
			defer func() { done <- struct{}{} }()
			n.Run(ctx)
		}
	}
	bg, stopBG := context.WithCancel(context.Background())
	bgDone := make(chan struct{}, workers)
	if bgNotify != nil {
		go bgNotify(bg, bgDone)
	}
	go func() { defer func() { bgDone <- struct{}{} }(); cp.Run(bg, auditLog) }()
	go func() { defer func() { bgDone <- struct{}{} }(); sweeper.Run(bg) }()
	go func() { defer func() { bgDone <- struct{}{} }(); sessionCache.Run(bg, st, log) }()
	if cfg.PolicyFile != "" {
		go func() { defer func() { bgDone <- struct{}{} }(); reloader.Run(bg) }()
	}
	// Keys reload without a restart: every 30 s, and at once on SIGHUP (so
	// does the policy file).
	go func() { defer func() { bgDone <- struct{}{} }(); keys.Watch(bg, token.DefaultWatchInterval) }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer func() { bgDone <- struct{}{} }()
		defer signal.Stop(hup)
		for {
			select {
			case <-bg.Done():
				return
			case <-hup:
				if err := keys.Reload(); err != nil {
					log.Error("SIGHUP: keys reload failed; the previous keys stay in use", "error", err)
				} else {
					log.Info("SIGHUP: keys reloaded", "signer", keys.Signer(), "count", len(keys.Keys()))
				}
				if cfg.PolicyFile != "" {
					_ = reloader.Reload(bg, "SIGHUP") // logs and counts its own failure
				}
			}
		}
	}()
	defer func() {
		stopBG()
		for range workers {
			<-bgDone
		}
		// Cover what this instance saw last before it goes.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cp.Once(fctx, auditLog)
	}()

	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      60 * time.Second, // /v1/audit/verify may take up to 50s
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var msrv *http.Server
	if metricsLn != nil {
		msrv = &http.Server{Handler: server.MetricsHandler(metrics), ReadHeaderTimeout: 5 * time.Second}
		go func() { errc <- msrv.Serve(metricsLn) }()
		log.Info("metrics listening", "addr", metricsLn.Addr().String())
		announce(ctx, "metrics", metricsLn.Addr().String())
	}
	log.Info("listening", "addr", ln.Addr().String(), "public_url", cfg.PublicURL, "app_url", cfg.AppURL, "delivery", string(cfg.Delivery))
	announce(ctx, "http", ln.Addr().String())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if msrv != nil {
		_ = msrv.Shutdown(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// redisLogger sends go-redis's internal log lines to slog.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
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
