package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/user"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/safetext"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
)

const sessionsUsage = `Usage: impersonator sessions list [--actor ADMIN_ID|EMAIL]
       impersonator sessions show SESSION_ID
       impersonator sessions revoke SESSION_ID
       impersonator sessions revoke --actor ADMIN_ID|EMAIL

Reads and changes the service's Redis directly (REDIS_URL). --actor takes
the admin's id or email. Each revocation appends a session.revoked event
naming the operator ($USER, else the OS account). show prints a
session's activity trail: the requests forward-auth saw during it.
`

func runSessions(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "revoke" && args[0] != "show") {
		if len(args) > 0 && isHelp(args[0]) {
			fmt.Fprint(stdout, sessionsUsage)
			return flag.ErrHelp
		}
		fmt.Fprint(stderr, sessionsUsage)
		return errUsage
	}
	// A session id may start with "-" (base64url): a last argument that
	// is one is a session id, not a flag.
	if n := len(args); n >= 2 && len(args[n-1]) >= 16 && strings.HasPrefix(args[n-1], "-") && session.ValidSessionID(args[n-1]) {
		args = append(append(args[:n-1:n-1], "--"), args[n-1])
	}
	fs := flag.NewFlagSet("sessions "+args[0], flag.ContinueOnError)
	actor := fs.String("actor", "", "the admin's id, or email (with an @)")
	if err := parseFlags(fs, args[1:], sessionsUsage, stdout); err != nil {
		return err
	}
	st, err := openStore(ctx, getenv)
	if err != nil {
		return err
	}
	defer st.Close()
	if args[0] == "show" {
		if fs.NArg() != 1 || *actor != "" {
			fmt.Fprint(stderr, sessionsUsage)
			return errUsage
		}
		return showSession(ctx, st, fs.Arg(0), stdout)
	}
	if args[0] == "list" {
		if fs.NArg() > 0 {
			return fmt.Errorf("sessions list: unexpected arguments %q", fs.Args())
		}
		list, err := sessionsOfActor(ctx, st, *actor)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SESSION\tADMIN\tSUBJECT\tSTARTED\tEXPIRES\tREASON")
		for _, s := range list {
			fmt.Fprintf(tw, "%s\t%s (%s)\t%s:%s\t%s\t%s\t%s\n", safetext.Terminal(s.ID), safetext.Terminal(s.Actor.Email),
				safetext.Terminal(s.Actor.ID), safetext.Terminal(s.Subject.Collection), safetext.Terminal(s.Subject.ID),
				s.StartedAt.UTC().Format(time.RFC3339), s.ExpiresAt.UTC().Format(time.RFC3339), safetext.Terminal(s.Reason))
		}
		return tw.Flush()
	}
	operator := cliUser(getenv)
	rv := session.Revoker{Store: st, Events: audit.Encoder{}}
	ri := session.RequestInfo{RequestID: "cli"}
	switch {
	case *actor != "" && fs.NArg() == 0:
		ids := []string{*actor}
		if strings.Contains(*actor, "@") { // an email: the admin ids its live sessions name
			list, err := sessionsOfActor(ctx, st, *actor)
			if err != nil {
				return err
			}
			ids = ids[:0]
			for _, s := range list {
				if !slices.Contains(ids, s.Actor.ID) {
					ids = append(ids, s.Actor.ID)
				}
			}
		}
		n := 0
		for _, id := range ids {
			k, err := rv.RevokeAll(ctx, id, ri, "revoked with every session of admin "+*actor+" by CLI user "+operator)
			n += k
			if err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "revoked %d session(s) of admin %s\n", n, safetext.Terminal(*actor))
		return nil
	case *actor == "" && fs.NArg() == 1:
		err := rv.Revoke(ctx, fs.Arg(0), ri, "revoked by CLI user "+operator)
		if errors.Is(err, store.ErrNoSession) {
			return fmt.Errorf("no live session %q", fs.Arg(0))
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked session %s\n", safetext.Terminal(fs.Arg(0)))
		return nil
	}
	fmt.Fprint(stderr, sessionsUsage)
	return errUsage
}

// showSession prints the activity trail of session sid.
func showSession(ctx context.Context, st *store.Store, sid string, stdout io.Writer) error {
	if !session.ValidSessionID(sid) {
		return fmt.Errorf("%q is not a session id", safetext.Terminal(sid))
	}
	page, err := session.ReadActivity(ctx, st, sid)
	if errors.Is(err, store.ErrNoSession) {
		return fmt.Errorf("no activity recorded for session %s (unknown, or its trail expired)", sid)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "session %s: %d request(s)", sid, page.Requests)
	if page.Truncated {
		fmt.Fprintf(stdout, ", the first %d listed", len(page.Entries))
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tMETHOD\tPATH\tDECISION")
	for _, e := range page.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), safetext.Terminal(e.Method),
			safetext.Terminal(e.Path), safetext.Terminal(e.Decision))
	}
	return tw.Flush()
}

// sessionsOfActor lists the live sessions of an admin named by id, or by
// email (with an @, compared without case, as audit list --actor does);
// every live session when actor is empty.
func sessionsOfActor(ctx context.Context, st *store.Store, actor string) ([]store.Session, error) {
	if !strings.Contains(actor, "@") {
		return st.Sessions(ctx, actor)
	}
	all, err := st.Sessions(ctx, "")
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, s := range all {
		if strings.EqualFold(s.Actor.Email, actor) {
			out = append(out, s)
		}
	}
	return out, nil
}

// cliUser names the operator running the CLI in the events it records:
// $USER, else the OS account (os/user: $USER is unset under cron, sudo -i,
// systemd), else "unknown".
func cliUser(getenv func(string) string) string {
	if u := getenv("USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}
