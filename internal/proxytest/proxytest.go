// Package proxytest is what the proxy configuration tests (internal/nginxtest,
// internal/caddytest) share: the real service built from this module and run
// on a loopback port, the Forest action and the start page's login played
// over HTTP, stand-ins for a stopped, failing or hung service, and a
// revocation through the admin API.
package proxytest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/servicetest"
)

// ReadFile returns name's contents, or the error's text.
func ReadFile(name string) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Secret returns a random FOREST_AUTH_SECRET serve accepts: 32 random
// base64url characters and 16 distinct others.
func Secret(t *testing.T) string { return randomHex(t, 24) + "ghijklmnopqrstuv" }

// ModuleRoot walks up from the working directory to the go.mod.
func ModuleRoot(t *testing.T) string { return servicetest.ModuleRoot(t) }

func BuildService(t *testing.T, root string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "impersonator")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/impersonator")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/impersonator: %v\n%s", err, out)
	}
	return bin
}

type Service struct {
	once sync.Once
	cmd  *exec.Cmd
	done chan struct{}
}

// Stop kills the service (as a crash or an operator would) and waits for it.
func (s *Service) Stop() {
	s.once.Do(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
}

// StartService runs the service binary with env (and none of the caller's
// service variables), waits for /healthz and kills it at cleanup.
func StartService(t *testing.T, bin, addr string, env map[string]string) *Service {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: starts the binary")
	}
	cmd := exec.Command(bin, "serve")
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "IMPERSONATOR_") || strings.HasPrefix(k, "FOREST_") || k == "REDIS_URL" {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logName := filepath.Join(t.TempDir(), "impersonator.log")
	logFile, err := os.Create(logName)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatal(err)
	}
	s := &Service{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logFile.Close()
		close(s.done)
	}()
	t.Cleanup(s.Stop)

	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-s.done:
			t.Fatalf("impersonator exited at start:\n%s", ReadFile(logName))
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("impersonator not healthy on %s:\n%s", addr, ReadFile(logName))
		}
	}
}

// Mint runs the Forest Impersonate action on users 42 as ada@example.com
// and returns the impersonation token of the redirect answer.
func Mint(t *testing.T, base, secret, access string) string {
	t.Helper()
	admin := servicetest.ForestJWT(t, secret)
	body := `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],` +
		`"values":{"Reason":"ticket 4242: nginx forward-auth test"` + accessValue(access) + `},"all_records":false,"smart_action_id":"users-impersonate"}}}`
	req, err := http.NewRequest(http.MethodPost, base+"/forest/actions/impersonate", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var answer struct {
		RedirectTo string `json:"redirectTo"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("mint: %d %s", res.StatusCode, raw)
	}
	_, tok, ok := strings.Cut(answer.RedirectTo, "#token=")
	if !ok || tok == "" {
		t.Fatalf("mint: redirectTo %q has no #token=", answer.RedirectTo)
	}
	return tok
}

// Login posts the token through nginx as the start page does and returns
// the session cookie.
func Login(t *testing.T, base, tok string) *http.Cookie {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/impersonation/login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("login through nginx: %d %s", res.StatusCode, raw)
	}
	for _, c := range res.Cookies() {
		if c.Name == "impersonation_session" && c.Value != "" {
			return c
		}
	}
	t.Fatalf("login through nginx set no session cookie: %v", res.Header.Values("Set-Cookie"))
	return nil
}

// Stub serves h on addr (the stopped service's address) while during runs.
func Stub(t *testing.T, addr string, h http.HandlerFunc, during func()) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the killed service's socket may take a moment to go
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen on the service's address: %v", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("stub: %v", err)
		}
	}()
	during()
}

// accessValue is the action's Access value, when one is chosen.
func accessValue(access string) string {
	if access == "" {
		return ""
	}
	return `,"Access":"` + access + `"`
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b) // 64 letters: 16 distinct, as serve requires
}

// AdminToken is the service's IMPERSONATOR_ADMIN_TOKENS in these tests.
const AdminToken = "proxytest-admin-token-0123456789abcdefghij"

// Revoke revokes the session of c through the admin API, as
// `impersonator sessions revoke` does.
func Revoke(t *testing.T, base string, c *http.Cookie) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/impersonation/session", nil)
	req.AddCookie(c)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		SessionID string `json:"session_id"`
	}
	err = json.NewDecoder(res.Body).Decode(&s)
	res.Body.Close()
	if err != nil || s.SessionID == "" {
		t.Fatalf("session: %d %v", res.StatusCode, err)
	}
	req, _ = http.NewRequest(http.MethodDelete, base+"/v1/sessions/"+s.SessionID, nil)
	req.Header.Set("Authorization", "Bearer "+AdminToken)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d, want 204", res.StatusCode)
	}
}

// Hung listens on addr (the stopped service's address), accepts every
// connection and never reads from nor answers it, while during runs;
// during gets the count of accepted connections.
func Hung(t *testing.T, addr string, during func(accepted *atomic.Int32)) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the killed service's socket may take a moment to go
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen on the service's address: %v", err)
	}
	var accepted atomic.Int32
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	during(&accepted)
}

// Keys writes a signing key, active at once, into a new folder with the
// service binary (`keys generate`), for a service on a real Redis (which
// generates none itself), and returns the folder.
func Keys(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(bin, "keys", "generate", "--dir", dir, "--activate-after", "0s").CombinedOutput(); err != nil {
		t.Fatalf("keys generate: %v\n%s", err, out)
	}
	return dir
}
