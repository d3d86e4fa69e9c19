package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

const healthcheckUsage = `Usage: impersonator healthcheck [--ready] [--addr HOST:PORT] [--timeout D]

Asks the service on this machine whether it is alive (GET /healthz) or,
with --ready, ready (GET /readyz), and exits 0 only on a 200. For a
container's HEALTHCHECK, where an image without a shell has no curl. The
address defaults to IMPERSONATOR_LISTEN's port on loopback.
`

// runHealthcheck is `impersonator healthcheck`.
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	listen := getenv("IMPERSONATOR_LISTEN")
	if listen == "" {
		listen = "127.0.0.1:8080"
	}
	addr := fs.String("addr", "", "the service's address (default: IMPERSONATOR_LISTEN's port on 127.0.0.1)")
	ready := fs.Bool("ready", false, "ask /readyz (Redis answers, not draining) instead of /healthz")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := parseFlags(fs, args, healthcheckUsage, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected arguments %q", fs.Args())
	}
	if *addr == "" {
		_, port, err := net.SplitHostPort(listen)
		if err != nil {
			return fmt.Errorf("healthcheck: IMPERSONATOR_LISTEN %q: %w", listen, err)
		}
		*addr = net.JoinHostPort("127.0.0.1", port)
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+path, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<10))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d %s", path, res.StatusCode, body)
	}
	fmt.Fprintf(stdout, "%s %d %s", path, res.StatusCode, body)
	return nil
}
