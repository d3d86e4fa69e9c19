package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/impersonator/impersonator/internal/token"
)

func runKeys(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "generate" && args[0] != "list") {
		fmt.Fprint(stderr, "Usage: impersonator keys generate [--alg EdDSA|ES256] [--dir DIR]\n       impersonator keys list [--dir DIR]\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return errUsage
	}
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	defDir := getenv("IMPERSONATOR_KEYS_DIR")
	if defDir == "" {
		defDir = "keys"
	}
	dir := fs.String("dir", defDir, "keys folder (IMPERSONATOR_KEYS_DIR)")
	alg := token.AlgEdDSA
	if args[0] == "generate" {
		fs.StringVar(&alg, "alg", token.AlgEdDSA, "EdDSA (Ed25519) or ES256 (ECDSA P-256)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("keys %s: unexpected arguments %q", args[0], fs.Args())
	}
	if args[0] == "generate" {
		k, err := token.WriteNew(*dir, alg, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "generated %s key %s in %s/%s; it signs from the next start\n", k.Alg, k.ID, *dir, k.File)
		return nil
	}
	ks, err := token.LoadDir(*dir)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tALG\tFILE\tSIGNS")
	for _, k := range ks.Keys() {
		signs := ""
		if k == ks.Signer() {
			signs = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, k.Alg, k.File, signs)
	}
	return tw.Flush()
}
