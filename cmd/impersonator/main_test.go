package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// startServe runs `impersonator serve` on :0 in the background and returns
// its base URL (learnt from serve's listening callback); the server stops
// when the test ends.
func startServe(t *testing.T, vars map[string]string) (string, *syncBuffer) {
	t.Helper()
	stderr := &syncBuffer{}
	addrs := make(chan string, 2)
	ctx, cancel := context.WithCancel(withListening(context.Background(), func(name, addr string) {
		if name == "http" {
			addrs <- addr
		}
	}))
	done := make(chan error, 1)
	if vars["IMPERSONATOR_LISTEN"] == "" {
		vars["IMPERSONATOR_LISTEN"] = "127.0.0.1:0"
	}
	vars["IMPERSONATOR_LOG_FORMAT"] = "text"
	if _, set := vars["IMPERSONATOR_SHUTDOWN_DRAIN"]; !set {
		vars["IMPERSONATOR_SHUTDOWN_DRAIN"] = "0s" // no load balancer to wait for
	}
	go func() { done <- run(ctx, []string{"serve"}, env(vars), io.Discard, stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v after shutdown", err)
		}
	})
	select {
	case addr := <-addrs:
		return "http://" + addr, stderr
	case err := <-done:
		t.Fatalf("serve exited early: %v\n%s", err, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not listen:\n%s", stderr.String())
	}
	return "", nil
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if v != nil {
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	return res.StatusCode
}

// TestServeEmbeddedDefaults is `make run` on a fresh clone: no configuration,
// an empty keys folder; the service generates a key, announces it and the
// embedded Redis, publishes the key and is ready.
func TestServeEmbeddedDefaults(t *testing.T) {
	dir := t.TempDir() + "/keys"
	base, stderr := startServe(t, map[string]string{"IMPERSONATOR_KEYS_DIR": dir})
	var jwks struct {
		Keys []struct{ Kid, Alg, Kty, Use string } `json:"keys"`
	}
	if code := getJSON(t, base+"/.well-known/jwks.json", &jwks); code != 200 || len(jwks.Keys) != 1 {
		t.Fatalf("jwks: status %d, %d keys; want 200 and 1", code, len(jwks.Keys))
	}
	k := jwks.Keys[0]
	if k.Alg != "EdDSA" || k.Kty != "OKP" || k.Use != "sig" {
		t.Errorf("generated key = %+v, want an EdDSA signing key", k)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
	if len(files) != 1 || !strings.Contains(files[0], k.Kid) {
		t.Errorf("keys folder holds keys %v, want one file named after kid %s", files, k.Kid)
	}
	log := stderr.String()
	for _, want := range []string{"EMBEDDED IN-PROCESS Redis", "generated a development signing key", k.Kid} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if code := getJSON(t, base+"/readyz", nil); code != 200 {
		t.Errorf("readyz = %d, want 200", code)
	}
}

// TestServeRealRedisRequiresKeys: with REDIS_URL set, an empty keys folder
// is an error (instances must share keys), and with a key it serves.
func TestServeRealRedisRequiresKeys(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	err := run(context.Background(), []string{"serve"}, env(map[string]string{
		"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir, "IMPERSONATOR_LISTEN": "127.0.0.1:0",
	}), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "keys generate") {
		t.Fatalf("serve with an empty keys folder and REDIS_URL = %v, want an error naming `keys generate`", err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir, "--alg", "ES256"}, env(nil), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	base, stderr := startServe(t, map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir})
	if code := getJSON(t, base+"/readyz", nil); code != 200 {
		t.Errorf("readyz = %d, want 200", code)
	}
	if !strings.Contains(stderr.String(), "persists nothing to disk") {
		t.Errorf("no warning about a Redis without persistence:\n%s", stderr.String())
	}
}

// TestServeBadConfigListsEveryProblem: serve exits before listening and
// names every bad variable at once.
func TestServeBadConfigListsEveryProblem(t *testing.T) {
	err := run(context.Background(), []string{"serve"}, env(map[string]string{
		"IMPERSONATOR_PUBLIC_URL":   "ftp://x",
		"IMPERSONATOR_DELIVERY":     "carrier-pigeon",
		"IMPERSONATOR_TOKEN_TTL":    "10m",
		"IMPERSONATOR_LOGIN_RATE":   "lots",
		"REDIS_URL":                 "http://nope",
		"FOREST_AUTH_SECRET":        "hunter2-forest",
		"IMPERSONATOR_ADMIN_TOKENS": "hunter2-admin",
	}), io.Discard, io.Discard)
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v, want a *config.Error", err)
	}
	for _, name := range []string{"IMPERSONATOR_PUBLIC_URL", "IMPERSONATOR_DELIVERY", "IMPERSONATOR_TOKEN_TTL",
		"IMPERSONATOR_LOGIN_RATE", "REDIS_URL", "FOREST_AUTH_SECRET", "IMPERSONATOR_ADMIN_TOKENS"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error prints a secret's value:\n%v", err)
	}
}

func TestKeysGenerateAndList(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	for _, alg := range []string{"EdDSA", "ES256"} {
		if err := run(context.Background(), []string{"keys", "generate", "--dir", dir, "--alg", alg, "--activate-after", "0"}, env(nil), &out, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"keys", "list", "--dir", dir}, env(nil), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "EdDSA") || !strings.Contains(lines[2], "ES256") || !strings.Contains(lines[2], " signing ") {
		t.Errorf("keys list =\n%s\nwant a header, the EdDSA key, then the ES256 key marked as signer", out.String())
	}
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir, "--alg", "RS256"}, env(nil), &out, io.Discard); err == nil {
		t.Error("keys generate --alg RS256 succeeded")
	}
}

// TestDocsAgree: README, `impersonator --help`, `serve --help` and the
// Makefile name the same commands, variables and targets.
func TestDocsAgree(t *testing.T) {
	readme := readFile(t, "../../README.md")
	makefile := readFile(t, "../../Makefile")
	var help bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, env(nil), &help, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, c := range commands() {
		if !strings.Contains(help.String(), "  "+c.name+" ") {
			t.Errorf("--help does not list %q", c.name)
		}
		if !strings.Contains(readme, "impersonator "+c.name) {
			t.Errorf("README does not show `impersonator %s`", c.name)
		}
	}
	var serveHelp bytes.Buffer
	if _, err := config.Load([]string{"--help"}, env(nil), &serveHelp); err == nil {
		t.Fatal("serve --help did not stop")
	}
	for _, v := range config.Vars {
		row := "| `" + v.Env + "` | `--" + v.Flag + "` |"
		if !strings.Contains(readme, row) {
			t.Errorf("README configuration tables lack the row for %s (%s)", v.Env, row)
		}
		if !strings.Contains(serveHelp.String(), "--"+v.Flag+" ("+v.Env) {
			t.Errorf("serve --help lacks --%s (%s)", v.Flag, v.Env)
		}
	}
	for _, target := range []string{"run", "test", "test-short", "bench", "lint", "help"} {
		if !regexp.MustCompile(`(?m)^` + target + `:.*## `).MatchString(makefile) {
			t.Errorf("Makefile has no documented target %q", target)
		}
		if !strings.Contains(readme, "make "+target) {
			t.Errorf("README does not mention `make %s`", target)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestServeBadPolicyFile: a policy file with a mistake stops serve before
// it listens, naming the variable and the problem.
func TestServeBadPolicyFile(t *testing.T) {
	path := t.TempDir() + "/policy.yaml"
	if err := os.WriteFile(path, []byte("colections: [users]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"serve"}, env(map[string]string{
		"IMPERSONATOR_POLICY_FILE": path, "IMPERSONATOR_LISTEN": "127.0.0.1:0",
	}), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "IMPERSONATOR_POLICY_FILE") || !strings.Contains(err.Error(), "colections") {
		t.Fatalf("serve with a bad policy = %v, want an error naming the variable and the unknown key", err)
	}
}

// TestSessionsCommand: list and revoke through the CLI against the Redis a
// running serve uses; the revoked cookie stops working at once.
func TestSessionsCommand(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir}, env(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir}
	vars["FOREST_AUTH_SECRET"] = forestSecret
	base, _ := startServe(t, vars)
	cookie := login(t, base, mint(t, base, "42"))

	var out bytes.Buffer
	cli := env(map[string]string{"REDIS_URL": srv.URL(), "USER": "ops"})
	if err := run(context.Background(), []string{"sessions", "list"}, cli, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "ada@example.com (1001)") || !strings.Contains(lines[1], "users:42") {
		t.Fatalf("sessions list =\n%s\nwant one session of ada on users:42", out.String())
	}
	sid := strings.Fields(lines[1])[0]
	// A session id that starts with "-" (base64url) is an id, not a flag.
	for _, cmd := range []string{"show", "revoke"} {
		err := run(context.Background(), []string{"sessions", cmd, "-AAAAAAAAAAAAAAAAAAAAA"}, cli, io.Discard, io.Discard)
		if err == nil || strings.Contains(err.Error(), "flag") {
			t.Errorf("sessions %s -AAAA…: %v, want the session unknown", cmd, err)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"sessions", "revoke", sid}, cli, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"sessions", "revoke", sid}, cli, &out, io.Discard); err == nil {
		t.Error("revoking a revoked session succeeded")
	}
	req, _ := http.NewRequest("GET", base+"/impersonation/session", nil)
	req.AddCookie(cookie)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("session after CLI revocation: %d, want 401", res.StatusCode)
	}
	if err := run(context.Background(), []string{"sessions", "list"}, env(nil), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Errorf("sessions list without REDIS_URL = %v, want an error naming REDIS_URL", err)
	}
}

// TestAuditCommands: list (table, jsonl, csv), export (and --follow) and
// verify against the Redis of a running serve; verify fails once an event
// is deleted.
func TestAuditCommands(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir}, env(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	base, _ := startServe(t, map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir, "IMPERSONATOR_CHECKPOINT_INTERVAL": "1s",
		"FOREST_AUTH_SECRET": forestSecret})
	login(t, base, mint(t, base, "42"))
	cli := env(map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir})
	runOut := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), args, cli, &out, io.Discard)
		return out.String(), err
	}

	table, err := runOut("audit", "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[1], "impersonation.redeemed") ||
		!strings.Contains(lines[2], "impersonation.minted") || !strings.Contains(lines[1], "ada@example.com") || !strings.Contains(lines[1], "users:42") {
		t.Errorf("audit list =\n%s\nwant a header, redeemed, then minted by ada on users:42", table)
	}
	// --subject reads a collection's id by the kind IMPERSONATOR_POLICY_FILE
	// declares, as the API does: users:42 is no UUID.
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte("ids: {users: uuid}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"audit", "list", "--subject", "users:42"},
		env(map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_POLICY_FILE": policy}), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "UUID") {
		t.Errorf("audit list --subject users:42 under ids {users: uuid} = %v, want not a UUID", err)
	}
	if out, err := runOut("audit", "list", "--subject", "users:42"); err != nil || !strings.Contains(out, "users:42") {
		t.Errorf("audit list --subject users:42 = %v\n%s, want its events", err, out)
	}
	jsonl, err := runOut("audit", "list", "--type", "impersonation.minted", "--format", "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(jsonl)), &e); err != nil || e.Type != "impersonation.minted" {
		t.Errorf("audit list --format jsonl --type minted = %q (%v)", jsonl, err)
	}
	csvOut, err := runOut("audit", "list", "--format", "csv", "--actor", "ada@example.com")
	if err != nil || !strings.HasPrefix(csvOut, "id,time,type,") || strings.Count(csvOut, "\n") != 3 {
		t.Errorf("audit list --format csv =\n%s (%v)", csvOut, err)
	}
	if _, err := runOut("audit", "list", "--type", "bogus"); err == nil {
		t.Error("audit list --type bogus succeeded")
	}
	export, err := runOut("audit", "export")
	evLines := eventLines(export)
	if err != nil || len(evLines) != 2 || evLines[0].Type != "impersonation.minted" || evLines[0].StreamID == "" {
		t.Errorf("audit export =\n%s (%v), want 2 events with their stream ids, oldest first", export, err)
	}

	// verify: wait for serve's checkpointer (1s) to cover both events.
	deadline := time.Now().Add(15 * time.Second)
	var rep string
	for {
		rep, err = runOut("audit", "verify")
		if err == nil && strings.Contains(rep, `"events_verified": 2`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit verify never covered both events: %v\n%s", err, rep)
		}
		time.Sleep(200 * time.Millisecond)
	}
	export, err = runOut("audit", "export")
	if err != nil || !strings.Contains(export, `{"checkpoint":{"seq":1,`) {
		t.Errorf("audit export after a checkpoint =\n%s (%v), want a checkpoint line", export, err)
	}
	// An attacker with Redis access deletes the oldest event.
	victim := eventLines(export)[0].StreamID
	if err := srv.Client(t).XDel(context.Background(), "{impersonator}:audit", victim).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err = runOut("audit", "verify")
	if !errors.Is(err, errTampered) || !strings.Contains(rep, victim) || !strings.Contains(rep, "deleted") {
		t.Errorf("verify after deleting %s = %v\n%s\nwant a failure naming it", victim, err, rep)
	}
	// The same with the public keys alone (the published JWKS) and with the
	// export as a witness.
	witness := t.TempDir() + "/export.jsonl"
	if err := os.WriteFile(witness, []byte(export), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err = runOut("audit", "verify", "--jwks", base+"/.well-known/jwks.json", "--keys-dir", "/nonexistent", "--witness", witness)
	if !errors.Is(err, errTampered) || !strings.Contains(rep, victim) {
		t.Errorf("verify --jwks --witness after the deletion = %v\n%s", err, rep)
	}
}

// TestAuditExportFollow: export --follow streams events appended after it
// started, then stops when cancelled.
func TestAuditExportFollow(t *testing.T) {
	srv := redistest.StartServer(t)
	st, err := store.Open(srv.URL(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"audit", "export", "--follow"}, env(map[string]string{"REDIS_URL": srv.URL()}), out, io.Discard)
	}()
	ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Denied, Actor: audit.Actor{ID: "1", Email: "a@example.com"}, Detail: "followed"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "followed") {
		if _, err := st.Append(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("export --follow wrote nothing")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // following, idle: blocked in Redis
	cancelled := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("export --follow returned %v after cancel", err)
	}
	if d := time.Since(cancelled); d > 1200*time.Millisecond {
		t.Errorf("export --follow took %s to stop after the interrupt, want under a second", d)
	}
}
