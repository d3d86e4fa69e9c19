package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/safetext"
	"github.com/impersonator/impersonator/internal/token"
)

const auditUsage = `Usage: impersonator audit list [--actor A] [--subject S] [--type T] [--since T] [--until T] [--limit N] [--format table|jsonl|csv]
       impersonator audit export [--since T] [--after STREAM_ID] [--follow]
       impersonator audit verify [--keys-dir DIR | --jwks URL|FILE] [--witness FILE]... [--checkpoint-interval D]
       impersonator audit accept --statement TEXT [--keys-dir DIR]

list    events newest first (a readable table by default)
export  JSON lines, oldest first, for a SIEM: each event with its "stream_id",
        each checkpoint as {"checkpoint":…} after the events it covers;
        --follow keeps streaming; --after resumes after a stream id
accept  after an integrity alarm you have looked into: appends an audit.accepted
        event with your statement, then signs checkpoints over the uncovered
        events (and it) carrying the statement; verify lists them. Running
        instances lower their sticky alarm at their next checkpoint interval.
        Never covers deleted checkpoints. Needs the signing keys.
verify  checks every event against the signed checkpoints; exit status 0
        only when intact, 3 when tampered with, 4 when it cannot finish
        (a checkpoint signed by a key the verifier lacks)

Reads the service's Redis directly (REDIS_URL). verify checks signatures with
the public halves of the keys in IMPERSONATOR_KEYS_DIR (--keys-dir), or with
the service's published JWKS alone (--jwks). --witness (repeatable) compares
the chain with what was seen outside Redis: an export, the service's JSON log,
or a witness file; IMPERSONATOR_AUDIT_WITNESS, when set, is read too. Without
a witness, a full rewrite by someone with write access to Redis cannot be
detected.
Times are RFC 3339 (2026-11-25T10:00:00Z).
`

// Exit statuses of audit verify.
var (
	errTampered   = errors.New("the audit log is not intact")
	errIncomplete = errors.New("the audit log could not be verified completely")
)

func runAudit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "export" && args[0] != "verify" && args[0] != "accept") {
		if len(args) > 0 && isHelp(args[0]) {
			fmt.Fprint(stdout, auditUsage)
			return flag.ErrHelp
		}
		fmt.Fprint(stderr, auditUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
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
	after := fs.String("after", "", "export: start after this stream id (resume a shipper)")
	defKeys := getenv("IMPERSONATOR_KEYS_DIR")
	if defKeys == "" {
		defKeys = "keys"
	}
	keysDir := fs.String("keys-dir", defKeys, "verify: folder of the signing keys")
	jwks := fs.String("jwks", "", "verify: the service's JWKS (URL or file) instead of the keys folder")
	var witnesses []string
	fs.Func("witness", "verify: an export, JSON log or witness file kept outside Redis (repeatable)", func(v string) error {
		witnesses = append(witnesses, v)
		return nil
	})
	statement := fs.String("statement", "", "accept: why the uncovered events are genuine (signed into the checkpoints)")
	interval := fs.Duration("checkpoint-interval", envDuration(getenv, "IMPERSONATOR_CHECKPOINT_INTERVAL", time.Minute), "verify: the service's checkpoint interval")
	if err := parseFlags(fs, args[1:], auditUsage, stdout); err != nil {
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
	ids := action.DefaultPolicy()
	if path := getenv("IMPERSONATOR_POLICY_FILE"); path != "" {
		var err error
		if ids, err = action.LoadPolicy(path); err != nil {
			return fmt.Errorf("IMPERSONATOR_POLICY_FILE: %w", err)
		}
	}
	filter, err := audit.ParseFilter(q, func(collection, id string) (string, error) { return ids.IDs[collection].Parse(id) })
	if err != nil {
		return err
	}
	if *after != "" && !audit.ValidStreamID(*after) {
		return fmt.Errorf("--after %q is not a stream id such as 1764064491000-0", *after)
	}
	var keys audit.SignatureVerifier
	var wit []audit.Summary
	if args[0] == "verify" {
		if keys, err = verifierFor(ctx, *keysDir, *jwks); err != nil {
			return err
		}
		if p := getenv("IMPERSONATOR_AUDIT_WITNESS"); p != "" {
			witnesses = append(witnesses, p)
		}
		for _, p := range witnesses {
			f, err := os.Open(p)
			if err != nil {
				return fmt.Errorf("witness: %w", err)
			}
			w, err := audit.ReadWitness(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("witness %s: %w", p, err)
			}
			wit = append(wit, w...)
		}
		if len(witnesses) == 0 {
			fmt.Fprintln(stderr, "note:", audit.NoWitnessNote)
		}
	}
	var signer *token.Keyset
	if args[0] == "accept" {
		if *statement == "" {
			return errors.New("audit accept: --statement is required: say why the uncovered events are genuine")
		}
		if signer, err = token.LoadDir(*keysDir); err != nil {
			return fmt.Errorf("audit accept signs checkpoints and needs the service's keys: %w", err)
		}
	}
	st, err := openStore(ctx, getenv)
	if err != nil {
		return err
	}
	defer st.Close()
	log := audit.NewLog(st, time.Now)
	if args[0] == "accept" {
		by := audit.Actor{ID: "operator"}
		if u := cliUser(getenv); u != "unknown" {
			by.ID = "operator:" + u
		}
		sums, err := log.Accept(ctx, signer, *statement, by)
		for _, s := range sums {
			fmt.Fprintf(stdout, "checkpoint %d covers %s..%s (%d events), accepted\n", s.Seq, s.First, s.Last, s.Events)
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "running instances lower their integrity alarm at their next checkpoint interval")
		return nil
	}
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
		return exportEvents(ctx, log, filter, *after, *follow, stdout)
	}
	rep, err := log.Verify(ctx, keys, audit.VerifyOptions{MaxUncovered: 2 * *interval, Witness: wit})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	if rep.TimeNotID > 0 {
		fmt.Fprintf(stderr, "warning: %d events have a stored time that is not their stream id's; the first: %s\n", rep.TimeNotID, rep.TimeProblem)
	}
	switch {
	case rep.Tampered:
		return errTampered
	case !rep.OK:
		return errIncomplete
	}
	return nil
}

func envDuration(getenv func(string) string, name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// verifierFor returns the checkpoint signature verifier: the published
// JWKS (a URL or a file) when given, else the keys folder.
func verifierFor(ctx context.Context, keysDir, jwks string) (audit.SignatureVerifier, error) {
	if jwks == "" {
		ks, err := token.LoadDir(keysDir)
		if err != nil {
			return nil, fmt.Errorf("verify needs the service's keys (or --jwks URL): %w", err)
		}
		return ks, nil
	}
	var b []byte
	var err error
	if strings.HasPrefix(jwks, "http://") || strings.HasPrefix(jwks, "https://") {
		b, err = fetch(ctx, jwks)
	} else {
		b, err = os.ReadFile(jwks)
	}
	if err != nil {
		return nil, fmt.Errorf("--jwks: %w", err)
	}
	return token.ParseJWKS(b)
}

func fetch(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, res.Status)
	}
	return io.ReadAll(io.LimitReader(res.Body, 1<<20))
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
			row := []string{e.ID, e.Time.Format(time.RFC3339), string(e.Type), e.Actor.ID, e.Actor.Email,
				e.Subject.Collection, e.Subject.ID, e.Reason, e.TokenID, e.SessionID, e.IP, e.RequestID, e.Detail}
			for i := range row {
				// Control characters escaped as the table shows them, so a
				// reason can neither drive a terminal that cats the file
				// nor forge a line; then formulas neutralised.
				row[i] = safetext.CSVCell(safetext.Terminal(row[i]))
			}
			_ = cw.Write(row)
		}
		cw.Flush()
		return cw.Error()
	case "table":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tTYPE\tACTOR\tSUBJECT\tREASON\tDETAIL")
		for _, e := range events {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s:%s\t%s\t%s\n", e.Time.Format(time.RFC3339), safetext.Terminal(string(e.Type)),
				safetext.Terminal(actorLabel(e.Actor)), safetext.Terminal(e.Subject.Collection), safetext.Terminal(e.Subject.ID),
				clip(safetext.Terminal(e.Reason), 40), clip(safetext.Terminal(e.Detail), 60))
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

// exportLine is a checkpoint's line of `audit export`.
type exportLine struct {
	Checkpoint *audit.Summary `json:"checkpoint"`
}

// exportedEvent is an event's line of `audit export`: the event's own JSON,
// with its stream position first (to resume with --after).
type exportedEvent struct {
	StreamID string `json:"stream_id"`
	audit.Event
}

// exportEvents writes every event after `after` (or since filter.Since) as
// JSON lines, oldest first, with each checkpoint's summary after the last
// event it covers (a witness for `audit verify --witness`); with follow it
// keeps writing new events and checkpoints until ctx ends. It wakes at
// least every second, so an interrupt stops it within a second.
func exportEvents(ctx context.Context, log *audit.Log, filter audit.Filter, after string, follow bool, w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	pos := after
	if pos == "" && !filter.Since.IsZero() {
		pos = fmt.Sprintf("%d-0", filter.Since.UnixMilli()-1)
	}
	var pending []audit.Summary // checkpoints read, not yet written
	cpAfter := ""
	// Checkpoints that end before pos were exported with their events
	// before (or are older than what is asked): skip them.
	skipOld := pos != ""
	refill := func() error {
		for {
			sums, last, err := log.CheckpointsAfter(ctx, cpAfter, 100)
			if err != nil {
				return err
			}
			cpAfter = last
			for _, c := range sums {
				if skipOld && !audit.StreamLess(pos, c.Last) {
					continue
				}
				pending = append(pending, c)
			}
			if len(sums) < 100 {
				return nil
			}
		}
	}
	// flush writes the pending checkpoints that end before upTo ("": all
	// that end at or before pos).
	flush := func(upTo string) error {
		for len(pending) > 0 {
			c := pending[0]
			if upTo != "" && !audit.StreamLess(c.Last, upTo) {
				return nil
			}
			if upTo == "" && pos != "" && audit.StreamLess(pos, c.Last) {
				return nil
			}
			if err := enc.Encode(exportLine{Checkpoint: &c}); err != nil {
				return err
			}
			pending = pending[1:]
		}
		return nil
	}
	if err := refill(); err != nil {
		return err
	}
	skipOld = false
	for {
		var batch []audit.Entry
		var err error
		batch, err = log.ReadAfter(ctx, pos, 500)
		if err == nil && len(batch) == 0 && follow {
			batch, err = log.WaitAfter(ctx, pos, time.Second)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		for _, e := range batch {
			if err := flush(e.StreamID); err != nil {
				return err
			}
			if err := enc.Encode(exportedEvent{StreamID: e.StreamID, Event: e.Event}); err != nil {
				return err
			}
			pos = e.StreamID
		}
		if err := refill(); err != nil {
			return err
		}
		if err := flush(""); err != nil {
			return err
		}
		if len(batch) == 0 && !follow {
			return nil
		}
	}
}
