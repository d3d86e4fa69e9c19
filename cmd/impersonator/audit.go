package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/server"
	"github.com/impersonator/impersonator/internal/token"
)

const auditUsage = `Usage: impersonator audit list [--actor A] [--subject S] [--type T] [--since T] [--until T] [--limit N] [--format table|jsonl|csv]
       impersonator audit export [--since T] [--follow]
       impersonator audit verify [--keys-dir DIR]

list    events newest first (a readable table by default)
export  JSON lines, oldest first, for a SIEM; --follow keeps streaming new events
verify  checks every event against the signed checkpoints; exit status 0 only when intact

Reads the service's Redis directly (REDIS_URL). verify checks signatures with
the public halves of the keys in IMPERSONATOR_KEYS_DIR (or --keys-dir).
Times are RFC 3339 (2026-11-25T10:00:00Z).
`

// errTampered makes `audit verify` exit non-zero after printing its report.
var errTampered = errors.New("the audit log is not intact")

func runAudit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "export" && args[0] != "verify") {
		fmt.Fprint(stderr, auditUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return errUsage
	}
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	q := url.Values{}
	filters := []string{}
	switch args[0] {
	case "list":
		filters = []string{"actor", "subject", "type", "since", "until"}
	case "export":
		filters = []string{"since"}
	}
	vals := map[string]*string{}
	for _, f := range filters {
		vals[f] = fs.String(f, "", "filter: "+f)
	}
	limit := fs.Int("limit", 50, "list: at most this many events (at most 1000)")
	format := fs.String("format", "table", "list: table, jsonl or csv")
	follow := fs.Bool("follow", false, "export: keep streaming new events until interrupted")
	defKeys := getenv("IMPERSONATOR_KEYS_DIR")
	if defKeys == "" {
		defKeys = "keys"
	}
	keysDir := fs.String("keys-dir", defKeys, "verify: folder of the signing keys")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("audit %s: unexpected arguments %q", args[0], fs.Args())
	}
	for k, v := range vals {
		if *v != "" {
			q.Set(k, *v)
		}
	}
	filter, err := audit.ParseFilter(q)
	if err != nil {
		return err
	}
	var keys *token.Keyset
	if args[0] == "verify" {
		if keys, err = token.LoadDir(*keysDir); err != nil {
			return fmt.Errorf("verify needs the service's keys: %w", err)
		}
	}
	st, closeStore, err := openStore(ctx, getenv)
	if err != nil {
		return err
	}
	defer closeStore()
	log := server.AuditLog(st, time.Now)
	switch args[0] {
	case "list":
		if *limit < 1 || *limit > audit.MaxLimit {
			return fmt.Errorf("--limit must be from 1 to %d", audit.MaxLimit)
		}
		page, err := log.Query(ctx, filter, *limit, "")
		if err != nil {
			return err
		}
		return printEvents(stdout, *format, page.Events)
	case "export":
		return exportEvents(ctx, log, filter, *follow, stdout)
	}
	rep, err := log.Verify(ctx, keys)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	if !rep.OK {
		return errTampered
	}
	return nil
}

func printEvents(w io.Writer, format string, events []audit.Event) error {
	switch format {
	case "jsonl":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, e := range events {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"id", "time", "type", "actor_id", "actor_email", "subject_collection", "subject_id", "reason", "token_id", "session_id", "ip", "request_id", "detail"})
		for _, e := range events {
			_ = cw.Write([]string{e.ID, e.Time.Format(time.RFC3339), string(e.Type), e.Actor.ID, e.Actor.Email,
				e.Subject.Collection, e.Subject.ID, e.Reason, e.TokenID, e.SessionID, e.IP, e.RequestID, e.Detail})
		}
		cw.Flush()
		return cw.Error()
	case "table":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tTYPE\tACTOR\tSUBJECT\tREASON\tDETAIL")
		for _, e := range events {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s:%s\t%s\t%s\n", e.Time.Format(time.RFC3339), e.Type, actorLabel(e.Actor),
				e.Subject.Collection, e.Subject.ID, clip(e.Reason, 40), clip(e.Detail, 60))
		}
		return tw.Flush()
	}
	return fmt.Errorf("--format %q is not table, jsonl or csv", format)
}

func actorLabel(a audit.Actor) string {
	switch {
	case a.Email != "":
		return a.Email
	case a.ID != "":
		return "id " + a.ID
	}
	return "-"
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// exportEvents writes every event since filter.Since as JSON lines, oldest
// first, then with follow keeps writing new ones until ctx ends.
func exportEvents(ctx context.Context, log *audit.Log, filter audit.Filter, follow bool, w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	last := "0-0"
	if follow {
		// Start following from the tail as it is now, so nothing appended
		// during the catch-up is lost or written twice.
		var err error
		if last, err = log.LastID(ctx); err != nil {
			return err
		}
	}
	var werr error
	err := log.Range(ctx, "-", func(e audit.Entry) bool {
		if follow && !streamAtOrBefore(e.StreamID, last) {
			return false
		}
		if filter.Match(e.Event) {
			werr = enc.Encode(e.Event)
		}
		return werr == nil
	})
	if err != nil || werr != nil {
		return errors.Join(err, werr)
	}
	if !follow {
		return nil
	}
	return log.Follow(ctx, last, func(e audit.Entry) error {
		if filter.Match(e.Event) {
			return enc.Encode(e.Event)
		}
		return nil
	})
}

func streamAtOrBefore(id, last string) bool {
	return id == last || audit.StreamLess(id, last)
}
