package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/app"
	"github.com/impersonator/impersonator/internal/buildinfo"
	"github.com/impersonator/impersonator/internal/config"
)

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
	cfg, err := config.LoadWith(config.Options{CheckPolicy: checkPolicy, Environ: os.Environ()}, args, getenv, stdout) // --help to stdout
	if err != nil {
		return err
	}
	tuneGC()
	policy, err := action.LoadPolicy(cfg.PolicyFile)
	if err != nil {
		return &config.Error{Problems: []error{fmt.Errorf("IMPERSONATOR_POLICY_FILE: %w", err)}}
	}
	a, err := app.New(ctx, cfg, app.Options{Stderr: stderr, Policy: policy, SIGHUP: true,
		Announce: func(name, addr string) { announce(ctx, name, addr) },
		Version:  buildinfo.Version(), Commit: buildinfo.Commit()})
	if err != nil {
		return err
	}
	defer a.Close()
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
	return a.Serve(ctx, ln, metricsLn)
}
