package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/server"
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

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	policy, err := action.LoadPolicy(cfg.PolicyFile)
	if err != nil {
		return &config.Error{Problems: []error{fmt.Errorf("IMPERSONATOR_POLICY_FILE: %w", err)}}
	}
	log := newLogger(cfg, stderr)
	now := time.Now
	if cfg.ForestAuthSecret == "" {
		log.Warn("FOREST_AUTH_SECRET is not set: the Forest action routes answer 503 until it is")
	}
	if len(cfg.AdminTokens) == 0 {
		log.Info("IMPERSONATOR_ADMIN_TOKENS is not set: the /v1 admin API answers 403")
	}

	conn, err := store.Open(cfg.RedisURL.Reveal())
	if err != nil {
		return err
	}
	defer conn.Close()
	if conn.Embedded != nil {
		log.Warn("REDIS_URL is empty: using an EMBEDDED IN-PROCESS Redis that keeps NOTHING across restarts (tokens, sessions and the audit log are lost); for development only",
			"addr", conn.Embedded.Addr())
	} else {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := conn.Client.Ping(pctx).Err(); err != nil {
			log.Error("redis does not answer yet; /readyz reports 503 and every mint and login fails closed until it does", "error", err)
		} else if p := store.CheckPersistence(pctx, conn.Client); p.Known && !p.Durable() {
			log.Warn("the connected Redis persists nothing to disk (appendonly no, no save points): a Redis restart loses the audit log; enable AOF (appendonly yes, appendfsync everysec)")
		}
		cancel()
	}

	keys, created, err := loadKeys(cfg, conn.Embedded != nil, now)
	if err != nil {
		return err
	}
	if created != nil {
		log.Warn("keys folder was empty: generated a development signing key", "key", created, "dir", cfg.KeysDir)
	}
	log.Info("signing keys loaded", "signer", keys.Signer(), "count", len(keys.Keys()))

	st := store.New(conn.Client, store.Options{Now: now})
	handler := server.New(server.Deps{
		Log:      log,
		Config:   cfg,
		Store:    st,
		Keys:     keys,
		Issuer:   token.NewIssuer(keys, cfg.PublicURL, cfg.Audience, now),
		Verifier: token.NewVerifier(keys, cfg.PublicURL, cfg.Audience, now),
		Now:      now,
		Policy:   policy,
	})

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	// Signed audit checkpoints, off the request path.
	auditLog := server.AuditLog(st, now)
	cpCtx, stopCheckpoints := context.WithCancel(context.Background())
	cpDone := make(chan struct{})
	go func() {
		defer close(cpDone)
		auditLog.RunCheckpointer(cpCtx, log, keys, cfg.CheckpointInterval, cfg.AuditRetention)
	}()
	defer func() {
		stopCheckpoints()
		<-cpDone
		// Cover what this instance saw last before it goes.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := auditLog.CatchUp(fctx, keys); err != nil {
			log.Error("final audit checkpoint failed", "error", err)
		}
	}()
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      60 * time.Second, // /v1/audit/verify may take up to 50s

		IdleTimeout:    60 * time.Second,
		MaxHeaderBytes: 32 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("listening", "addr", ln.Addr().String(), "public_url", cfg.PublicURL, "app_url", cfg.AppURL, "delivery", string(cfg.Delivery))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// loadKeys loads the keys folder. In development (embedded Redis) an empty
// folder gets a new key; in production it is an error, because instances
// that each generated their own key would refuse each other's tokens.
func loadKeys(cfg *config.Config, development bool, now func() time.Time) (*token.Keyset, *token.Key, error) {
	if development {
		return token.LoadOrCreate(cfg.KeysDir, now())
	}
	ks, err := token.LoadDir(cfg.KeysDir)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (with REDIS_URL set no key is generated for you: run `impersonator keys generate --dir %s` and share the folder with every instance)", err, cfg.KeysDir)
	}
	return ks, nil, nil
}
