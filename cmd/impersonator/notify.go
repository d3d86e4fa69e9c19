package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"

	"github.com/impersonator/impersonator/internal/notify"
	"github.com/impersonator/impersonator/internal/safetext"
)

const notifyUsage = `Usage: impersonator notify test

Sends one test notification (type impersonator.notify.test) to each URL of
IMPERSONATOR_NOTIFY_URLS, signed with IMPERSONATOR_NOTIFY_SECRET as serve
signs its notifications (Slack URLs get a test line), and prints each
answer: the HTTP status, or the error. Exits non-zero if any URL failed.
URLs are printed as scheme://host/… only: their paths and queries may be
credentials. Needs no Redis.
`

// runNotify is `impersonator notify`.
func runNotify(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "test" {
		if len(args) > 0 && isHelp(args[0]) {
			fmt.Fprint(stdout, notifyUsage)
			return flag.ErrHelp
		}
		fmt.Fprint(stderr, notifyUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("notify test", flag.ContinueOnError)
	if err := parseFlags(fs, args[1:], notifyUsage, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("notify test: unexpected arguments %q", fs.Args())
	}
	cfg, errs := notify.ParseConfig(getenv(notify.EnvURLs), getenv(notify.EnvSecret), getenv(notify.EnvEvents))
	if len(errs) > 0 {
		return fmt.Errorf("notify test: configuration:\n  %w", errors.Join(errs...))
	}
	if !cfg.Enabled() {
		return fmt.Errorf("notify test: %s is not set: nothing to send to", notify.EnvURLs)
	}
	answers := notify.SendTest(ctx, cfg, nil, nil)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tURL\tANSWER")
	failed := 0
	for _, a := range answers {
		result, answer := "ok", fmt.Sprintf("%d %s", a.Status, http.StatusText(a.Status))
		if a.Err != nil {
			failed++
			result, answer = "FAIL", a.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", result, safetext.Terminal(a.Target.Redacted()), safetext.Terminal(answer))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("notify test: %d of %d URLs failed", failed, len(answers))
	}
	return nil
}
