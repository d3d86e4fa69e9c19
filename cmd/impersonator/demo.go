package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/app"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/browserflow"
	"github.com/impersonator/impersonator/internal/buildinfo"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/safetext"
)

const demoUsage = `Usage: impersonator demo [--panel-listen ADDR] [--app-listen ADDR] [--delivery auto|webhook|redirect]

Serves, on loopback, an impersonation you can click through in a browser:
an admin panel (http://127.0.0.1:PORT) that behaves like the Forest UI for
the Impersonate action, and a customer app on another site
(http://localhost:PORT) that serves impersonator under its own host, shows
who is signed in (forward-auth) and the banner. impersonator runs inside,
on the embedded Redis, with a signing key and a Forest secret made for this
run and forgotten when it stops. It prints the URL to open, then an access
log of both sites and the audit log as they grow, until interrupted.
`

// runDemo serves the clickable demo until ctx ends.
func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	panelListen := fs.String("panel-listen", "127.0.0.1:8081", "the admin panel's address (served as http://127.0.0.1:PORT)")
	appListen := fs.String("app-listen", "127.0.0.1:8082", "the customer app's address (served as http://localhost:PORT, another site)")
	delivery := fs.String("delivery", string(config.Auto), "IMPERSONATOR_DELIVERY: auto works whatever the browser does with third-party cookies")
	if err := parseFlags(fs, args, demoUsage, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo: unexpected arguments %q", fs.Args())
	}
	for _, a := range []string{*panelListen, *appListen} {
		if host, _, err := net.SplitHostPort(a); err != nil || (host != "localhost" && !net.ParseIP(host).IsLoopback()) {
			return fmt.Errorf("demo: %q is not a loopback address: the demo's development secrets stay on this machine", a)
		}
	}
	panelLn, err := net.Listen("tcp", *panelListen)
	if err != nil {
		return fmt.Errorf("demo: admin panel: %w", err)
	}
	defer panelLn.Close()
	appLn, err := net.Listen("tcp", *appListen)
	if err != nil {
		return fmt.Errorf("demo: customer app: %w", err)
	}
	defer appLn.Close()
	serviceLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer serviceLn.Close()
	panelURL := "http://" + panelLn.Addr().String()
	// Another site than the panel's (127.0.0.1): the webhook's cookie is a
	// third-party cookie, as it is between app.forestadmin.com and the app.
	appURL := "http://localhost:" + port(appLn)

	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	forestSecret := base64.RawURLEncoding.EncodeToString(secret)
	env := map[string]string{
		"IMPERSONATOR_PUBLIC_URL":      appURL, // impersonator under the app's host
		"IMPERSONATOR_APP_URL":         appURL,
		"IMPERSONATOR_ALLOWED_ORIGINS": panelURL,
		"IMPERSONATOR_DELIVERY":        *delivery,
		"FOREST_AUTH_SECRET":           forestSecret,
	}
	dir, err := os.MkdirTemp("", "impersonator-demo-keys")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	env["IMPERSONATOR_KEYS_DIR"] = dir
	env["IMPERSONATOR_SHUTDOWN_DRAIN"] = "0s" // no load balancer to tell
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	service, err := app.New(ctx, cfg, app.Options{Log: log, Version: buildinfo.Version(), Commit: buildinfo.Commit()})
	if err != nil {
		return err
	}
	defer service.Close()

	out := &lockedWriter{w: stdout}
	access := &browserflow.AccessLog{Out: out}
	serviceURL := &url.URL{Scheme: "http", Host: serviceLn.Addr().String()}
	admin := "ada@example.com"
	panel := &http.Server{Handler: access.Wrap("panel", &browserflow.Panel{
		ActionURL: appURL + "/forest/actions/impersonate",
		Bearer: func() (string, error) {
			return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
				"id": 1001, "email": admin, "firstName": "Ada", "lastName": "Lovelace", "team": "Support", "role": "Admin",
				"exp": time.Now().Add(time.Hour).Unix(),
			}).SignedString([]byte(forestSecret))
		},
		Admin:  admin,
		Reason: "ticket 1234: customer cannot see invoices",
	}), ReadHeaderTimeout: 5 * time.Second}
	customer := &http.Server{Handler: access.Wrap("app", &browserflow.App{Service: serviceURL, PanelOrigin: panelURL}),
		ReadHeaderTimeout: 5 * time.Second}

	bg, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Go(func() {
		if err := service.Serve(bg, serviceLn, nil); err != nil {
			errc <- err
		}
	})
	for _, s := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{panel, panelLn}, {customer, appLn}} {
		wg.Go(func() {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
	wg.Go(func() { tailAudit(bg, audit.NewLog(service.Store(), time.Now), out) })
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range []*http.Server{panel, customer} {
			_ = s.Shutdown(sctx)
		}
		stop()
		wg.Wait()
	}()

	fmt.Fprintf(out, `impersonator demo: open %s/ and click Impersonate.
  admin panel   %s/  signed in as %s (its Forest JWT is signed with a secret made for this run)
  customer app  %s/  impersonator under its host: /impersonation/*, /.well-known/*, /forest/*
  delivery      %s
Stop with Ctrl-C. Both sites' access log and the audit log follow.
`, panelURL, panelURL, admin, appURL, cfg.Delivery)
	announce(ctx, "panel", panelLn.Addr().String())
	announce(ctx, "app", appLn.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}

func port(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

// tailAudit prints each audit event as it is appended, until ctx ends.
func tailAudit(ctx context.Context, l *audit.Log, out io.Writer) {
	seen := 0
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for {
		n := 0
		_ = l.Range(ctx, "-", func(e audit.Entry) bool {
			n++
			if n > seen {
				ev := e.Event
				fmt.Fprintf(out, "audit %s %s %s:%s %s\n", safetext.Terminal(string(ev.Type)), safetext.Terminal(ev.Actor.Email),
					safetext.Terminal(ev.Subject.Collection), safetext.Terminal(ev.Subject.ID), safetext.Terminal(ev.Detail))
				seen = n
			}
			return true
		})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lockedWriter serialises the lines of the demo's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
