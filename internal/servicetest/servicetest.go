// Package servicetest runs the real impersonator for tests of what sits
// beside it (the customer app's middleware): it builds the binary from this
// module, starts `impersonator serve` on a loopback port with the variables
// a test gives (and none of the caller's), mints and logs in as the Forest
// UI and the browser do, and runs the CLI against the same Redis.
package servicetest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ModuleRoot walks up from the working directory to the go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Build builds ./cmd/impersonator into a temporary directory and returns
// the binary's path.
func Build(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	bin, err := BuildInto(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// BuildInto builds ./cmd/impersonator into dir (for a TestMain that builds
// once for every test of a package) and returns the binary's path.
func BuildInto(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goBin, lookErr := exec.LookPath("go")
	if lookErr != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(dir, "impersonator")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/impersonator")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/impersonator: %v\n%s", err, out)
	}
	return bin, nil
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Secret returns a random FOREST_AUTH_SECRET the service accepts.
func Secret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b) + "ghijklmnopqrstuv" // 16 distinct letters besides the hex
}

// Service is a running `impersonator serve`.
type Service struct {
	URL  string // http://ADDR
	Addr string
	Env  map[string]string // the variables it was started with

	bin     string
	cmd     *exec.Cmd
	done    chan struct{}
	once    sync.Once
	logName string
}

// Start runs `bin serve` with env on its IMPERSONATOR_LISTEN (a free
// loopback port when unset), waits until /healthz answers and kills it
// when the test ends.
func Start(t testing.TB, bin string, env map[string]string) *Service {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: starts the binary")
	}
	addr := env["IMPERSONATOR_LISTEN"]
	if addr == "" {
		addr = FreeAddr(t)
	}
	vars := map[string]string{"IMPERSONATOR_LISTEN": addr, "IMPERSONATOR_LOG_FORMAT": "text"}
	for k, v := range env {
		vars[k] = v
	}
	s := &Service{URL: "http://" + addr, Addr: addr, Env: vars, bin: bin, done: make(chan struct{}),
		logName: filepath.Join(t.TempDir(), "impersonator.log")}
	s.cmd = s.command("serve")
	logFile, err := os.Create(s.logName)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		t.Fatal(err)
	}
	go func() {
		s.cmd.Wait()
		logFile.Close()
		close(s.done)
	}()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if res, err := http.Get(s.URL + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-s.done:
			t.Fatalf("impersonator exited at start:\n%s", s.Log())
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("impersonator not healthy on %s:\n%s", addr, s.Log())
		}
	}
}

// command is the binary with the service's variables and none of the
// caller's IMPERSONATOR_*, FOREST_* or REDIS_URL.
func (s *Service) command(args ...string) *exec.Cmd {
	cmd := exec.Command(s.bin, args...)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "IMPERSONATOR_") || strings.HasPrefix(k, "FOREST_") || k == "REDIS_URL" {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	for k, v := range s.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// CLI runs `impersonator ARGS…` with the service's variables (so the same
// Redis) and returns its standard output; a failure fails the test.
func (s *Service) CLI(t testing.TB, args ...string) string {
	t.Helper()
	cmd := s.command(args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("impersonator %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// Stop kills the service, as a crash or an operator would, and waits for it.
func (s *Service) Stop() {
	s.once.Do(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
}

// Log returns what the service wrote so far.
func (s *Service) Log() string {
	b, _ := os.ReadFile(s.logName)
	return string(b)
}

// ForestJWT is what the Forest UI sends: an HS256 JWT of ada@example.com
// (id 1001) signed with secret.
func ForestJWT(t testing.TB, secret string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"id": "1001", "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace",
		"team": "Support", "role": "Admin", "permissionLevel": "admin", "renderingId": 1,
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Mint runs the Forest Impersonate action on users id with access ("" for
// the default, "Read only", "Full access") and returns the webhook's token.
// The service's FOREST_AUTH_SECRET signs the admin's JWT.
func (s *Service) Mint(t testing.TB, id, access string) string {
	t.Helper()
	values := map[string]any{"Reason": "ticket 2121: the app's middleware test"}
	if access != "" {
		values["Access"] = access
	}
	body, _ := json.Marshal(map[string]any{"data": map[string]any{"type": "custom-action-requests", "attributes": map[string]any{
		"collection_name": "users", "ids": []string{id}, "values": values, "smart_action_id": "users-impersonate",
	}}})
	req, err := http.NewRequest(http.MethodPost, s.URL+"/forest/actions/impersonate", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ForestJWT(t, s.Env["FOREST_AUTH_SECRET"]))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var a struct {
		Webhook struct {
			Body struct {
				Token string `json:"token"`
			} `json:"body"`
		} `json:"webhook"`
	}
	if res.StatusCode != http.StatusOK || json.Unmarshal(raw, &a) != nil || a.Webhook.Body.Token == "" {
		t.Fatalf("mint: %d %s", res.StatusCode, raw)
	}
	return a.Webhook.Body.Token
}

// Login redeems tok as the admin panel's webhook does (JSON) and returns
// the session cookie.
func (s *Service) Login(t testing.TB, tok string) *http.Cookie {
	t.Helper()
	res, err := http.Post(s.URL+"/impersonation/login", "application/json", strings.NewReader(`{"token":"`+tok+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %s", res.StatusCode, raw)
	}
	for _, c := range res.Cookies() {
		if strings.HasSuffix(c.Name, "impersonation_session") && c.Value != "" {
			return c
		}
	}
	t.Fatalf("login set no session cookie: %v", res.Header.Values("Set-Cookie"))
	return nil
}

// Impersonate mints a token for users id with access and logs in with it.
func (s *Service) Impersonate(t testing.TB, id, access string) *http.Cookie {
	t.Helper()
	return s.Login(t, s.Mint(t, id, access))
}
