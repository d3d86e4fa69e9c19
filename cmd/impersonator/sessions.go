package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/login"
	"github.com/impersonator/impersonator/internal/store"
)

const sessionsUsage = `Usage: impersonator sessions list [--actor ADMIN_ID]
       impersonator sessions revoke SESSION_ID
       impersonator sessions revoke --actor ADMIN_ID

Reads and changes the service's Redis directly (REDIS_URL). Each revocation
appends a session.revoked event naming the operator ($USER).
`

func runSessions(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "revoke") {
		fmt.Fprint(stderr, sessionsUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return errUsage
	}
	fs := flag.NewFlagSet("sessions "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	actor := fs.String("actor", "", "admin id")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	st, closeStore, err := openStore(ctx, getenv)
	if err != nil {
		return err
	}
	defer closeStore()
	if args[0] == "list" {
		if fs.NArg() > 0 {
			return fmt.Errorf("sessions list: unexpected arguments %q", fs.Args())
		}
		list, err := st.Sessions(ctx, *actor)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SESSION\tADMIN\tSUBJECT\tSTARTED\tEXPIRES\tREASON")
		for _, s := range list {
			fmt.Fprintf(tw, "%s\t%s (%s)\t%s:%s\t%s\t%s\t%s\n", s.ID, s.Actor.Email, s.Actor.ID, s.Subject.Collection, s.Subject.ID,
				s.StartedAt.UTC().Format(time.RFC3339), s.ExpiresAt.UTC().Format(time.RFC3339), s.Reason)
		}
		return tw.Flush()
	}
	operator := getenv("USER")
	if operator == "" {
		operator = "unknown"
	}
	ev := func(detail string) func(store.Session) audit.Event {
		return func(s store.Session) audit.Event {
			return audit.Event{Type: audit.Revoked, Actor: s.Actor, Requester: s.Requester, Subject: s.Subject, Reason: s.Reason,
				TokenID: s.TokenID, SessionID: s.ID, Detail: detail + " by CLI user " + operator}
		}
	}
	switch {
	case *actor != "" && fs.NArg() == 0:
		n, err := login.RevokeAll(ctx, st, *actor, ev("revoked with every session of admin "+*actor))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %d session(s) of admin %s\n", n, *actor)
		return nil
	case *actor == "" && fs.NArg() == 1:
		err := login.Revoke(ctx, st, fs.Arg(0), ev("revoked"))
		if errors.Is(err, store.ErrNoSession) {
			return fmt.Errorf("no live session %s", fs.Arg(0))
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked session %s\n", fs.Arg(0))
		return nil
	}
	fmt.Fprint(stderr, sessionsUsage)
	return errUsage
}
