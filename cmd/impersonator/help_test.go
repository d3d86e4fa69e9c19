package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEveryCommandHelp walks every command and every subcommand its usage
// names: each answers --help with its usage on stdout and exit status 0
// (run returns nil or flag.ErrHelp, which main turns into 0).
func TestEveryCommandHelp(t *testing.T) {
	help := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(context.Background(), append(args, "--help"), env(nil), &out, &errOut)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s --help = %v, want exit 0", strings.Join(args, " "), err)
		}
		if !strings.Contains(out.String(), "Usage") {
			t.Errorf("%s --help printed no usage on stdout: %q (stderr %q)", strings.Join(args, " "), out.String(), errOut.String())
		}
		return out.String()
	}
	walked := 0
	for _, c := range commands() {
		usage := help(c.name)
		walked++
		seen := map[string]bool{}
		for _, m := range regexp.MustCompile(`impersonator `+c.name+` ([a-z][a-z-]+)`).FindAllStringSubmatch(usage, -1) {
			if sub := m[1]; !seen[sub] {
				seen[sub] = true
				help(c.name, sub)
				walked++
			}
		}
	}
	if walked < 19 { // 8 commands, 11 subcommands today
		t.Errorf("walked %d commands and subcommands, want every one (19 or more)", walked)
	}
}

// TestVersionStamped builds the binary as `make build` does and runs it:
// the version and commit are stamped, `version`, `--version` and
// `version --help` exit 0.
func TestVersionStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "impersonator")
	build := exec.Command("make", "-s", "-C", "../..", "build", "BIN="+bin, "VERSION=v9.8.7-test")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	commit := strings.TrimSpace(string(head))
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.HasPrefix(string(out), "impersonator v9.8.7-test (commit "+commit) {
			t.Errorf("%v printed %q, want the stamped version and commit %s", args, out, commit)
		}
	}
	if out, err := exec.Command(bin, "version", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "Usage") {
		t.Errorf("version --help: %v %s", err, out)
	}
	_ = os.Remove(bin)
}

// TestMakeRunSaysWhatItDoes: make run announces the compile before it
// starts (the first one takes a minute), then builds, then serves.
func TestMakeRunSaysWhatItDoes(t *testing.T) {
	out, err := exec.Command("make", "-s", "-n", "-C", "../..", "run").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "echo") || !strings.Contains(lines[0], "compiling") ||
		!strings.Contains(lines[1], "go build") || !strings.Contains(lines[2], "starting") || !strings.HasSuffix(lines[3], " serve") {
		t.Errorf("make run does:\n%s\nwant: say it compiles, build, say it starts, serve", out)
	}
}
