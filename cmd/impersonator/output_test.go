package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

// TestOutputIsSafe: what an event holds cannot drive the operator's
// terminal (escape sequences, forged rows) or a spreadsheet (formulas):
// audit list escapes every non-printable character in its table and
// neutralises formula cells in its CSV.
func TestOutputIsSafe(t *testing.T) {
	srv := redistest.StartServer(t)
	st, err := store.Open(srv.URL(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Denied, Actor: audit.Actor{ID: "1", Email: "=HYPERLINK(\"http://evil\")"},
		Subject: audit.Subject{Collection: "users", ID: "42"},
		Reason:  "ticket\x1b[2J\x1b[H\a hidden\n2026-01-01T00:00:00Z  impersonation.minted  forged", Detail: "+cmd|' /C calc'!A0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	cli := env(map[string]string{"REDIS_URL": srv.URL()})
	var table bytes.Buffer
	if err := run(context.Background(), []string{"audit", "list"}, cli, &table, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(table.String(), "\x1b") || strings.Count(table.String(), "\n") != 2 {
		t.Errorf("table holds raw escapes or a forged row:\n%q", table.String())
	}
	if !strings.Contains(table.String(), `\x1b[2J`) {
		t.Errorf("table does not show the escape, escaped:\n%s", table.String())
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"audit", "list", "--format", "csv"}, cli, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	csvText := out.String()
	rows, err := csv.NewReader(&out).ReadAll()
	if err != nil || len(rows) != 2 {
		t.Fatalf("csv = %v, %v", rows, err)
	}
	for _, cell := range rows[1] {
		if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
			t.Errorf("csv cell %q starts a formula", cell)
		}
	}
	// The CSV escapes control characters as the table does (issue 18).
	if strings.ContainsAny(csvText, "\x1b\a") || strings.Count(csvText, "\n") != 2 {
		t.Errorf("csv holds raw control characters or a forged row:\n%q", csvText)
	}
	if reason := rows[1][7]; reason != `ticket\x1b[2J\x1b[H\a hidden\n2026-01-01T00:00:00Z  impersonation.minted  forged` {
		t.Errorf("csv reason = %q, want it escaped as the table shows it", reason)
	}
}

// TestShipperResumes runs examples/impersonator-ship (the README's systemd
// shipper): killed and restarted, it writes every event exactly once.
func TestShipperResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	srv := redistest.StartServer(t)
	st, err := store.Open(srv.URL(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/impersonator", ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	appendN := func(from, n int) {
		for i := range n {
			ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Denied, Actor: audit.Actor{ID: "1"}, Detail: fmt.Sprint("e", from+i)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Append(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	file := t.TempDir() + "/audit.jsonl"
	ship := func(wantLines int) {
		t.Helper()
		cmd := exec.Command("sh", "../../examples/impersonator-ship", file)
		cmd.Env = append(os.Environ(), "REDIS_URL="+srv.URL(), "PATH="+bin+":"+os.Getenv("PATH"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if b, _ := os.ReadFile(file); len(eventLines(string(b))) >= wantLines {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	appendN(0, 5)
	ship(5)
	appendN(5, 5)
	ship(10)
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(readFile(t, file)), "\n") {
		var e struct{ Detail string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Detail != "" {
			seen[e.Detail]++
		}
	}
	for i := range 10 {
		if n := seen[fmt.Sprint("e", i)]; n != 1 {
			t.Errorf("event e%d shipped %d times, want once", i, n)
		}
	}
}

// TestCLIQuietWithSentinel: go-redis's own log lines (a Sentinel client
// announces the primary it found, on the process's stderr) never reach the
// CLI's output: the built binary, run against a real Sentinel setup, prints
// only its table.
func TestCLIQuietWithSentinel(t *testing.T) {
	s := redistest.StartSentinel(t, 1)
	bin := t.TempDir() + "/impersonator"
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "sessions", "list")
	cmd.Env = append(os.Environ(), "REDIS_URL="+s.URL())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if stderr.Len() != 0 || !strings.HasPrefix(stdout.String(), "SESSION") {
		t.Errorf("a clean run printed more than its table:\nstdout %q\nstderr %q", stdout.String(), stderr.String())
	}
}

// TestAuditAcceptCommand: audit accept needs a statement and the keys, and
// signs the uncovered events under it.
func TestAuditAcceptCommand(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir}, env(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(srv.URL(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev, _ := audit.Encoder{}.Encode(audit.Event{Type: audit.Denied, Actor: audit.Actor{ID: "1"}})
	if _, err := st.Append(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	cli := env(map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir})
	if err := run(context.Background(), []string{"audit", "accept"}, cli, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--statement") {
		t.Errorf("accept without a statement = %v, want it refused", err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"audit", "accept", "--statement", "test: outage OPS-1"}, cli, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "checkpoint 1 covers") {
		t.Errorf("accept printed %q", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"audit", "verify"}, cli, &out, io.Discard); err != nil || !strings.Contains(out.String(), "OPS-1") {
		t.Errorf("verify after accept = %v\n%s", err, out.String())
	}
}
