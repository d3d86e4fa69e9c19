package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/impersonator/impersonator/internal/token"
)

const keysUsage = `Usage: impersonator keys generate [--alg EdDSA|ES256] [--dir DIR] [--activate-after D]
       impersonator keys retire KID [--dir DIR] [--grace D]
       impersonator keys list [--dir DIR]

  generate  write a new key. It is pending (published and verifying, not
            signing) for --activate-after (default 10m; 0 signs at once), then
            signs; the first key of an empty folder signs at once.
  retire    make key KID verify-only now and drop it after --grace (default
            30m, the default IMPERSONATOR_SESSION_TTL; give at least the
            longest session lifetime). The key that signs cannot be retired.
  list      show each key: KID, ALG, FILE, STATE (pending, signing,
            verify-only, retired = dropped), ACTIVATES and DROPS times.

Running instances pick changes up when they reload the keys folder; no
restart is needed.
`

// Defaults of keys generate and keys retire.
const (
	defaultActivateAfter = 10 * time.Minute
	defaultGrace         = 30 * time.Minute
)

func runKeys(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return keysCommand(args, getenv, time.Now, stdout, stderr)
}

// keysCommand is `impersonator keys`, with now as the clock.
func keysCommand(args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "generate" && args[0] != "retire" && args[0] != "list") {
		if len(args) > 0 && isHelp(args[0]) {
			fmt.Fprint(stdout, keysUsage)
			return flag.ErrHelp
		}
		fmt.Fprint(stderr, keysUsage)
		return errUsage
	}
	sub := args[0]
	set := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	set.SetOutput(io.Discard) // errors are returned, and printed once by main
	defDir := getenv("IMPERSONATOR_KEYS_DIR")
	if defDir == "" {
		defDir = "keys"
	}
	dir := set.String("dir", defDir, "keys folder (IMPERSONATOR_KEYS_DIR)")
	var alg string
	var activateAfter, grace time.Duration
	wantArgs := 0
	switch sub {
	case "generate":
		set.StringVar(&alg, "alg", token.AlgEdDSA, "EdDSA (Ed25519) or ES256 (ECDSA P-256)")
		set.DurationVar(&activateAfter, "activate-after", defaultActivateAfter, "time the key is pending before it signs (0: at once)")
	case "retire":
		set.DurationVar(&grace, "grace", defaultGrace, "time the key still verifies before it is dropped: at least the longest session lifetime")
		wantArgs = 1
	}
	pos, err := parseInterspersed(set, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, keysUsage)
		fmt.Fprintf(stdout, "\nFlags of keys %s:\n", sub)
		set.SetOutput(stdout)
		set.PrintDefaults()
		return err
	}
	if err != nil {
		return err
	}
	if len(pos) != wantArgs {
		return fmt.Errorf("keys %s: want %d argument(s), got %q", sub, wantArgs, pos)
	}
	switch sub {
	case "generate":
		return keysGenerate(*dir, alg, activateAfter, now(), stdout)
	case "retire":
		return keysRetire(*dir, pos[0], grace, now(), stdout)
	}
	return keysList(*dir, now, stdout)
}

// parseInterspersed parses flags before and after positional arguments
// (keys retire KID --dir DIR) and returns the positional ones.
func parseInterspersed(set *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	// A key id is base64url and may start with "-": an argument that names
	// no flag and is as long as a key id is one, not a flag.
	var rest []string
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && len(a) >= 40 && set.Lookup(name) == nil {
			pos = append(pos, a)
			continue
		}
		rest = append(rest, a)
	}
	args = rest
	for {
		if err := set.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %w (see impersonator keys --help)", set.Name(), err)
		}
		if set.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, set.Arg(0))
		args = set.Args()[1:]
	}
}

func keysGenerate(dir, alg string, activateAfter time.Duration, now time.Time, stdout io.Writer) error {
	if activateAfter < 0 {
		return fmt.Errorf("keys generate: --activate-after %s is negative", activateAfter)
	}
	// The first key of a folder has no key to stay behind: it signs at once.
	if _, err := token.LoadDir(dir, token.WithClock(func() time.Time { return now })); errors.Is(err, token.ErrNoKeys) || errors.Is(err, fs.ErrNotExist) {
		activateAfter = 0
	} else if err != nil {
		return fmt.Errorf("keys generate: the keys folder has a problem to fix first: %w", err)
	}
	k, err := token.WriteKey(dir, alg, now, now.Add(activateAfter))
	if err != nil {
		return err
	}
	if activateAfter == 0 {
		fmt.Fprintf(stdout, "generated %s key %s in %s/%s; it signs now\n", k.Alg, k.ID, dir, k.File)
		return nil
	}
	fmt.Fprintf(stdout, "generated %s key %s in %s/%s; it is published and verifies from the next reload, and signs from %s\n",
		k.Alg, k.ID, dir, k.File, k.ActivateAt.Format(time.RFC3339))
	return nil
}

func keysRetire(dir, kid string, grace time.Duration, now time.Time, stdout io.Writer) error {
	k, err := token.Retire(dir, kid, now, grace)
	if err != nil {
		return fmt.Errorf("keys retire: %w", err)
	}
	fmt.Fprintf(stdout, "retired key %s: it verifies until %s, then is dropped; keep its file %s while the audit log holds checkpoints it signed (audit verify needs it and exits 4 without it): delete it only once IMPERSONATOR_AUDIT_RETENTION has trimmed them\n",
		k.ID, k.DropAt.Format(time.RFC3339), k.File)
	return nil
}

func keysList(dir string, now func() time.Time, stdout io.Writer) error {
	ks, err := token.LoadDir(dir, token.WithClock(now))
	if err != nil {
		return err
	}
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tALG\tFILE\tSTATE\tACTIVATES\tDROPS")
	for _, k := range ks.Keys() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Alg, k.File, ks.State(k), when(k.ActivateAt), when(k.DropAt))
	}
	return tw.Flush()
}
