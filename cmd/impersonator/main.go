// Command impersonator is a service that lets support staff log in as a
// customer safely: short-lived, signed, single-use impersonation tokens, a
// login endpoint that redeems each exactly once into a short, marked,
// revocable session, and an audit log of all of it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		switch {
		case errors.Is(err, flag.ErrHelp):
			os.Exit(0)
		case errors.Is(err, errTampered):
			os.Exit(3)
		case errors.Is(err, errIncomplete):
			os.Exit(4)
		case !errors.Is(err, errUsage):
			fmt.Fprintln(os.Stderr, "impersonator:", err)
		}
		os.Exit(1)
	}
}

// errUsage is returned after usage was printed for a bad command line.
var errUsage = errors.New("usage")

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

// commands lists the subcommands in the order --help shows them.
func commands() []command {
	return []command{
		{"serve", "run the service (configuration from the environment or flags; serve --help)", runServe},
		{"keys", "manage signing keys: keys generate [--alg EdDSA|ES256] [--activate-after D], keys retire KID, keys list", runKeys},
		{"sessions", "active sessions: sessions list [--actor ID], sessions show ID, sessions revoke ID | --actor ID", runSessions},
		{"audit", "the audit log: audit list [filters], audit export [--since T] [--follow], audit verify", runAudit},
		{"dev", "development helpers: dev forest-jwt --email E prints a Forest UI JWT signed with FOREST_AUTH_SECRET", runDev},
		{"demo", "serve a clickable impersonation on loopback: an admin panel and a customer app (demo --help)", runDemo},
		{"notify", "notifications: notify test sends a test event to each IMPERSONATOR_NOTIFY_URLS URL", runNotify},
		{"healthcheck", "exit 0 when the local service answers /healthz (or --ready: /readyz); for container health checks", runHealthcheck},
		{"version", "print the version", runVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `impersonator: safe "log in as a customer" for support staff.

Usage: impersonator <command> [arguments]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'impersonator <command> --help' for a command's flags.\n")
}

// run is the whole program; main only calls it and exits.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// go-redis logs its own reconnections; the CLI reports errors itself,
	// and serve sends these lines through its structured log instead.
	redis.SetLogger(app.RedisLogger{Log: slog.New(slog.DiscardHandler)})
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return nil
	case "--version", "-version":
		return runVersion(ctx, args[1:], getenv, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "impersonator: unknown command %q\n\n", args[0])
	usage(stderr)
	return errUsage
}
