package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/redistest"
)

// TestRetireKeepsFileWhileCheckpointsNeedIt: keys retire does not say the
// file may be deleted while checkpoints it signed remain: after a
// checkpoint signed by the key, deleting the retired key's file makes
// audit verify exit 4, which the message warns of.
func TestRetireKeepsFileWhileCheckpointsNeedIt(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir}, env(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	base, _ := startServe(t, map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir,
		"FOREST_AUTH_SECRET": forestSecret, "IMPERSONATOR_CHECKPOINT_INTERVAL": "1s"})
	mint(t, base, "42")
	old, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
	cli := env(map[string]string{"REDIS_URL": srv.URL()})
	deadline := time.Now().Add(10 * time.Second)
	for { // until a checkpoint signed by the first key covers the mint
		var out bytes.Buffer
		var rep struct{ Checkpoints int }
		if err := run(context.Background(), []string{"audit", "verify", "--keys-dir", dir}, cli, &out, io.Discard); err == nil &&
			json.Unmarshal(out.Bytes(), &rep) == nil && rep.Checkpoints > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint within 10s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir, "--activate-after", "0"}, env(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	kid := strings.TrimSuffix(filepath.Base(old[0]), ".pem")
	kid = kid[strings.Index(kid, "-")+1:]
	var msg bytes.Buffer
	if err := run(context.Background(), []string{"keys", "retire", kid, "--dir", dir, "--grace", "0s"}, env(nil), &msg, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(msg.String(), "can be deleted") || !strings.Contains(msg.String(), "keep its file") {
		t.Errorf("keys retire says %q; want it to say to keep the file while checkpoints it signed remain", msg.String())
	}
	// What the message warns of is true: without the file, verify exits 4.
	if err := os.Remove(old[0]); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"audit", "verify", "--keys-dir", dir}, cli, io.Discard, io.Discard)
	if !errors.Is(err, errIncomplete) || !strings.Contains(msg.String(), "exits 4") {
		t.Errorf("audit verify without the retired key's file = %v; the message says it exits 4", err)
	}
}

// TestSessionsActorEmailAndOSUser: sessions list and revoke --actor take
// an email as audit list --actor does, and with $USER unset the
// revocation names the OS account, not "unknown".
func TestSessionsActorEmailAndOSUser(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir}, env(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	base, _ := startServe(t, map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir, "FOREST_AUTH_SECRET": forestSecret})
	login(t, base, mint(t, base, "42"))
	login(t, base, mint(t, base, "43"))
	cli := env(map[string]string{"REDIS_URL": srv.URL()}) // no USER
	list := func(actor string) int {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"sessions", "list", "--actor", actor}, cli, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		return strings.Count(strings.TrimSpace(out.String()), "\n") // lines after the header
	}
	if n := list("Ada@Example.com"); n != 2 {
		t.Errorf("sessions list --actor Ada@Example.com: %d sessions, want 2", n)
	}
	if n := list("bob@example.com"); n != 0 {
		t.Errorf("sessions list --actor bob@example.com: %d sessions, want 0", n)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"sessions", "revoke", "--actor", "ada@example.com"}, cli, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "revoked 2 session(s)") {
		t.Errorf("sessions revoke --actor ada@example.com: %q, want 2 revoked", out.String())
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"audit", "list", "--type", "session.revoked", "--format", "jsonl"}, cli, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "by CLI user "+u.Username) != 2 || strings.Contains(out.String(), "CLI user unknown") {
		t.Errorf("session.revoked events do not name the OS user %s:\n%s", u.Username, out.String())
	}
}

// TestQuietLogs: forward-auth's ordinary 401 (a request without a
// session) is not an info line, only a debug one, while other refusals
// stay at info; the checkpoint is logged as attributes, not a Go struct.
func TestQuietLogs(t *testing.T) {
	for _, level := range []string{"info", "debug"} {
		t.Run(level, func(t *testing.T) {
			base, logs := startServe(t, map[string]string{"IMPERSONATOR_KEYS_DIR": t.TempDir() + "/keys",
				"IMPERSONATOR_LOG_LEVEL": level, "IMPERSONATOR_CHECKPOINT_INTERVAL": "1s", "FOREST_AUTH_SECRET": forestSecret})
			if code := getJSON(t, base+"/impersonation/session", nil); code != 401 {
				t.Fatalf("session without cookie = %d, want 401", code)
			}
			res, err := http.Post(base+"/impersonation/login", "application/json", strings.NewReader(`{"token":"x"}`))
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			mint(t, base, "42")
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(logs.String(), "msg=\"audit checkpoint\" checkpoint.") && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			log := logs.String()
			noSession := strings.Contains(log, "error=no_session")
			if level == "info" && noSession {
				t.Errorf("forward-auth's 401 without a session is logged at info:\n%s", log)
			}
			if level == "debug" && !strings.Contains(log, "level=DEBUG msg=\"request failed\"") {
				t.Errorf("forward-auth's 401 without a session is not logged at debug:\n%s", log)
			}
			if !strings.Contains(log, "level=INFO msg=\"request failed\"") || !strings.Contains(log, "route=/impersonation/login status=401") {
				t.Errorf("a refused login is no longer logged at info:\n%s", log)
			}
			if !strings.Contains(log, "checkpoint.seq=") || !strings.Contains(log, "checkpoint.events=") || strings.Contains(log, "checkpoint=\"{") {
				t.Errorf("the checkpoint is not logged as attributes:\n%s", log)
			}
		})
	}
}

// TestJWKSHeadHeaders: HEAD on the JWKS answers 200 with GET's
// Cache-Control (it answered 405 with no-store).
func TestJWKSHeadHeaders(t *testing.T) {
	base, _ := startServe(t, map[string]string{"IMPERSONATOR_KEYS_DIR": t.TempDir() + "/keys"})
	cc := map[string]string{}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, base+"/.well-known/jwks.json", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("%s jwks = %d, want 200", method, res.StatusCode)
		}
		cc[method] = res.Header.Get("Cache-Control")
	}
	if cc["GET"] != "public, max-age=300" || cc["HEAD"] != cc["GET"] {
		t.Errorf("Cache-Control: GET %q, HEAD %q; want both public, max-age=300", cc["GET"], cc["HEAD"])
	}
}

// TestReadmeHistoryQualified: wherever the README says the token leaves
// the address bar, it says which history: the tab's, not the browser's
// on-disk history (which keeps it, as the redirect scenario measures).
func TestReadmeHistoryQualified(t *testing.T) {
	readme := readFile(t, "../../README.md")
	n := 0
	for _, para := range strings.Split(readme, "\n\n") {
		if !strings.Contains(para, "address bar") {
			continue
		}
		n++
		if !strings.Contains(para, "session history") || !strings.Contains(para, "on-disk") {
			t.Errorf("a paragraph says the token leaves the address bar without the on-disk history qualification:\n%s", para)
		}
	}
	if n < 2 {
		t.Errorf("found %d paragraphs about the address bar, want the delivery comparison and redirect delivery's", n)
	}
}
