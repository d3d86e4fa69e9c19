package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/impersonator/impersonator/internal/buildinfo"
)

const versionUsage = `Usage: impersonator version (or impersonator --version)

Prints the version and commit this binary was built from (make build
stamps them), the Go version and the platform.
`

func runVersion(_ context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := parseFlags(fs, args, versionUsage, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("version takes no arguments")
	}
	fmt.Fprintf(stdout, "impersonator %s (commit %s) %s %s/%s\n", buildinfo.Version(), buildinfo.Commit(),
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
