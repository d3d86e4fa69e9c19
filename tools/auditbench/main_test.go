package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the verifying child too, as the tool's
// own binary is (it runs os.Executable).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "verify" {
		os.Exit(verifyChild(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestAuditbench runs the whole tool on a tiny log against a redis-server
// it starts: every query finds events, verification passes over every
// event, and the JSON has the figures.
func TestAuditbench(t *testing.T) {
	out := filepath.Join(t.TempDir(), "auditbench.json")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr strings.Builder
	args := []string{"--events", "2000", "--subjects", "50", "--admins", "10", "--workers", "8", "--runs", "3", "--cli=false", "--json", out}
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("auditbench: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	t.Log("\n" + stdout.String())

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Events != 2000 || rep.LoadRate <= 0 || rep.Checkpoints < 2 || rep.RedisMemMB <= 0 || rep.StreamMB <= 0 {
		t.Errorf("load figures: %+v", rep)
	}
	if len(rep.Queries) != 4 {
		t.Fatalf("%d queries, want 4", len(rep.Queries))
	}
	for _, q := range append(rep.Queries, rep.Scan) {
		if q.Returned == 0 || q.Runs != 3 || q.MedianMS <= 0 || q.MaxMS < q.MedianMS {
			t.Errorf("query %s: %+v", q.Name, q)
		}
	}
	v := rep.Verify
	if !v.OK || v.Verified != 2000 || v.Checkpoints != rep.Checkpoints || v.PeakRSSMB <= 0 || v.VmHWMEndMB == nil || *v.VmHWMEndMB <= 0 {
		t.Errorf("verify: %+v", v)
	}
	if rep.VerifyCLI != nil || rep.VerifyCLINot == "" {
		t.Errorf("--cli=false still verified through the CLI: %+v", rep.VerifyCLI)
	}
}

// TestFlags: bad flags and a Redis off this machine are refused before
// anything starts.
func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--events", "0"},
		{"--workers", "0"},
		{"--runs", "0"},
		{"--subjects", "10"},
		{"--redis-url", "redis://10.0.0.1:6379"},
		{"--redis-url", "rediss://127.0.0.1:6379"},
		{"extra"},
	} {
		var stderr strings.Builder
		if _, err := parseFlags(args, &stderr); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
	for _, raw := range []string{"redis://127.0.0.1:6379", "redis://localhost:6379/0", "redis://[::1]:6379", "unix:///tmp/redis.sock"} {
		if err := loopbackOnly(raw); err != nil {
			t.Errorf("%s refused: %v", raw, err)
		}
	}
}
