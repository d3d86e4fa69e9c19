package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

// keysCLI runs `impersonator keys` at the time *now and returns stdout.
func keysCLI(t *testing.T, now *time.Time, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := keysCommand(args, env(nil), func() time.Time { return *now }, &out, io.Discard)
	return out.String(), err
}

// listed returns `keys list`'s rows as fields, without the header.
func listed(t *testing.T, now *time.Time, dir string) [][]string {
	t.Helper()
	out, err := keysCLI(t, now, "list", "--dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "KID ALG FILE STATE ACTIVATES DROPS" {
		t.Fatalf("keys list header = %q", got)
	}
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

// states returns the STATE column of `keys list`.
func states(t *testing.T, now *time.Time, dir string) []string {
	t.Helper()
	var s []string
	for _, r := range listed(t, now, dir) {
		s = append(s, r[3])
	}
	return s
}

// TestKeysRotationCLI walks a rotation with the CLI and a fixed clock: the
// first key signs at once, the next is pending for the default 10m, the
// signing key cannot be retired, and a retired key drops after the default
// 30m grace.
func TestKeysRotationCLI(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	out, err := keysCLI(t, &now, "generate", "--dir", dir)
	if err != nil || !strings.Contains(out, "it signs now") {
		t.Fatalf("first generate = %q, %v; want a key that signs now", out, err)
	}
	out, err = keysCLI(t, &now, "generate", "--dir", dir, "--alg", "ES256")
	if err != nil || !strings.Contains(out, "signs from 2026-11-25T10:10:00Z") {
		t.Fatalf("second generate = %q, %v; want a key that signs in 10m", out, err)
	}
	rows := listed(t, &now, dir)
	a, b := rows[0][0], rows[1][0]
	if got := strings.Join(rows[1], " "); !strings.HasPrefix(got, b+" ES256 20261125T100000.000000001Z-"+b+".pem pending 2026-11-25T10:10:00Z -") {
		t.Errorf("pending key row = %q", got)
	}
	if got := states(t, &now, dir); strings.Join(got, " ") != "signing pending" {
		t.Errorf("states = %v, want signing pending", got)
	}
	if _, err := keysCLI(t, &now, "retire", a, "--dir", dir); err == nil || !strings.Contains(err.Error(), "signs now") {
		t.Errorf("retiring the signing key = %v, want a refusal", err)
	}

	now = now.Add(10 * time.Minute)
	if got := states(t, &now, dir); strings.Join(got, " ") != "verify-only signing" {
		t.Errorf("states at B's activation = %v, want verify-only signing", got)
	}
	// Flags after the KID are read too.
	out, err = keysCLI(t, &now, "retire", a, "--dir", dir)
	if err != nil || !strings.Contains(out, "verifies until 2026-11-25T10:40:00Z") {
		t.Fatalf("retire = %q, %v; want a drop 30m later", out, err)
	}
	if got := listed(t, &now, dir)[0]; got[3] != "verify-only" || got[5] != "2026-11-25T10:40:00Z" {
		t.Errorf("retired key within its grace = %v, want verify-only, dropping at 10:40", got)
	}
	now = now.Add(30 * time.Minute)
	if got := states(t, &now, dir); strings.Join(got, " ") != "retired signing" {
		t.Errorf("states after the grace = %v, want retired signing", got)
	}
}

// TestKeysFlags: --activate-after 0 and --grace, and what is refused.
func TestKeysFlags(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for range 2 {
		if _, err := keysCLI(t, &now, "generate", "--dir", dir, "--activate-after", "0"); err != nil {
			t.Fatal(err)
		}
	}
	if got := states(t, &now, dir); strings.Join(got, " ") != "verify-only signing" {
		t.Errorf("states after two keys active at once = %v", got)
	}
	a := listed(t, &now, dir)[0][0]
	if out, err := keysCLI(t, &now, "retire", "--grace", "0s", "--dir", dir, a); err != nil || !strings.Contains(out, "until 2026-11-25T10:00:00Z") {
		t.Errorf("retire --grace 0s = %q, %v", out, err)
	}
	if got := states(t, &now, dir); got[0] != "retired" {
		t.Errorf("key retired with no grace is %s, want retired at once", got[0])
	}
	for _, args := range [][]string{
		{"generate", "--dir", dir, "--activate-after", "-1m"},
		{"generate", "--dir", dir, "--alg", "RS256"},
		{"generate", "--dir", dir, "--grace", "1m"},
		{"retire", "--dir", dir},
		{"retire", "--dir", dir, "no-such-kid"},
		{"retire", "--dir", dir, a, "--grace", "-1s"},
		{"list", "--dir", dir, "extra"},
	} {
		if _, err := keysCLI(t, &now, args...); err == nil {
			t.Errorf("keys %v succeeded", args)
		}
	}
}

// TestKeysUsage: the usage names every subcommand and flag.
func TestKeysUsage(t *testing.T) {
	var stderr bytes.Buffer
	if err := keysCommand([]string{"--help"}, env(nil), time.Now, &stderr, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("keys --help = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"keys generate [--alg EdDSA|ES256] [--dir DIR] [--activate-after D]",
		"keys retire KID [--dir DIR] [--grace D]", "keys list [--dir DIR]"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, stderr.String())
		}
	}
	if err := keysCommand([]string{"rotate"}, env(nil), time.Now, io.Discard, io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("keys rotate = %v, want errUsage", err)
	}
}
