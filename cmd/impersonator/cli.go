package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/impersonator/impersonator/internal/store"
)

// openStore connects an operator command (audit, sessions) straight to the
// service's Redis, the system of record, with the same REDIS_URL as serve.
// While `serve` runs on the embedded development Redis, that Redis is
// reachable at the address serve's log prints (REDIS_URL=redis://ADDR).
func openStore(ctx context.Context, getenv func(string) string) (*store.Store, error) {
	url := getenv("REDIS_URL")
	if url == "" {
		return nil, errors.New("REDIS_URL is not set: this command reads the service's Redis directly; with `make run` (the embedded Redis) use the address its log prints: REDIS_URL=redis://127.0.0.1:PORT")
	}
	st, err := store.Open(url, store.Options{})
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// parseFlags parses args into fs without printing: a bad flag comes back
// as an error that main prints once; --help prints usage and fs's flags to
// stdout and returns flag.ErrHelp (exit 0).
func parseFlags(fs *flag.FlagSet, args []string, usage string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		flags := 0
		fs.VisitAll(func(*flag.Flag) { flags++ })
		if flags > 0 {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, "\nFlags:")
			fs.PrintDefaults()
		}
		return err
	}
	if err != nil {
		return fmt.Errorf("%s: %w (see impersonator %s --help)", fs.Name(), err, fs.Name())
	}
	return nil
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}
