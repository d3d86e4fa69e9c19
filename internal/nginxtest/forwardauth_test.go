package nginxtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The README's placeholders for the service and the app.
const (
	readmeService = "127.0.0.1:8080"
	readmeApp     = "127.0.0.1:3000"
)

// seen is what the fake app received: every value of each header (none
// when the header was absent).
type seen struct {
	Subject []string `json:"subject"`
	Actor   []string `json:"actor"`
	Scope   []string `json:"scope"`
}

var notImpersonating = seen{}

// TestReadmeForwardAuth runs the README's nginx forward-auth block, as
// written, between a real nginx, the real service (built from this module)
// and a fake app, and checks that it fails safe: with impersonator stopped,
// failing or hung the app still answers, as not impersonating; a client
// never gets its own X-Impersonation-* headers to the app; the app's own
// failures are not replayed; and no token reaches nginx's logs.
func TestReadmeForwardAuth(t *testing.T) {
	root := moduleRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	block, err := Snippet(readme, "nginx-forward-auth")
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	for _, placeholder := range []string{readmeService, readmeApp} {
		if !strings.Contains(block, placeholder) {
			t.Fatalf("README's nginx block no longer mentions %s:\n%s", placeholder, block)
		}
	}
	if _, err := Binary(); err != nil {
		t.Fatal(err) // never skip: the snippet is unproven without nginx
	}

	var crashes, writes atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			writes.Add(1)
		}
		if r.URL.Path == "/crash" { // the app itself fails: nginx answers 502
			crashes.Add(1)
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen{
			Subject: r.Header.Values("X-Impersonation-Subject"),
			Actor:   r.Header.Values("X-Impersonation-Actor"),
			Scope:   r.Header.Values("X-Impersonation-Scope"),
		})
	}))
	t.Cleanup(app.Close)

	svcAddr, ngxAddr := FreeAddr(t), FreeAddr(t)
	block = strings.ReplaceAll(block, readmeService, svcAddr)
	block = strings.ReplaceAll(block, readmeApp, app.Listener.Addr().String())

	bin := buildService(t, root)
	ngx := Start(t, ngxAddr, block)
	// 48 hex characters and 16 others: a secret needs 16 distinct
	// characters, which 48 random hex digits miss now and then.
	secret := randomHex(t, 24) + "ghijklmnopqrstuv"
	svc := startService(t, bin, svcAddr, map[string]string{
		"REDIS_URL":                "",
		"IMPERSONATOR_LISTEN":      svcAddr,
		"IMPERSONATOR_PUBLIC_URL":  ngx.URL,
		"IMPERSONATOR_APP_URL":     ngx.URL,
		"IMPERSONATOR_KEYS_DIR":    t.TempDir(),
		"FOREST_AUTH_SECRET":       secret,
		"IMPERSONATOR_DELIVERY":    "redirect",
		"IMPERSONATOR_LOG_LEVEL":   "warn",
		"IMPERSONATOR_LOGIN_RATE":  "0",
		"IMPERSONATOR_SESSION_TTL": "30m",
	})

	impToken := mint(t, "http://"+svcAddr, secret, "")
	cookie := login(t, ngx.URL, impToken)

	client := &http.Client{
		Timeout:       25 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	type request struct {
		name   string
		cookie bool // send the session cookie
		inject bool // send our own X-Impersonation-* headers
		// roCookie, when set, is the session cookie sent instead.
		roCookie *http.Cookie
		want     seen
	}
	send := func(t *testing.T, method, path string, r request) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, ngx.URL+path, strings.NewReader("a=1"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", "app_pref=dark")
		if r.cookie {
			c := cookie
			if r.roCookie != nil {
				c = r.roCookie
			}
			req.Header.Set("Cookie", "app_pref=dark; "+c.Name+"="+c.Value)
		}
		if r.inject {
			req.Header.Set("X-Impersonation-Subject", "1")
			req.Header.Set("X-Impersonation-Actor", "mallory@example.com")
			req.Header.Set("X-Impersonation-Scope", "full")
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, body
	}
	run := func(t *testing.T, cases []request) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				for _, method := range []string{http.MethodGet, http.MethodPost} {
					status, body := send(t, method, "/account", c)
					if status != http.StatusOK {
						t.Fatalf("%s: %d %s, want 200 from the app\nnginx error log:\n%s", method, status, body, ngx.ErrorLogText())
					}
					var got seen
					if err := json.Unmarshal(body, &got); err != nil {
						t.Fatalf("%s: app answered %s: %v", method, body, err)
					}
					if !reflect.DeepEqual(got, c.want) {
						t.Errorf("%s: the app saw %+v, want %+v", method, got, c.want)
					}
				}
			})
		}
	}
	impersonating := seen{Subject: []string{"42"}, Actor: []string{"ada@example.com"}, Scope: []string{"full"}}
	everyClient := []request{
		{name: "no cookie", want: notImpersonating},
		{name: "no cookie, injected headers", inject: true, want: notImpersonating},
	}

	t.Run("impersonator up", func(t *testing.T) {
		run(t, append([]request{
			{name: "cookie", cookie: true, want: impersonating},
			{name: "cookie, injected headers", cookie: true, inject: true, want: impersonating},
		}, everyClient...))
		t.Run("the app's own failure is not replayed as not impersonating", func(t *testing.T) {
			before := crashes.Load()
			status, _ := send(t, http.MethodPost, "/crash", request{cookie: true})
			if status != http.StatusBadGateway {
				t.Errorf("status %d, want nginx's 502", status)
			}
			if n := crashes.Load() - before; n != 1 {
				t.Errorf("the app received the failing POST %d times, want once", n)
			}
		})
		t.Run("read-only impersonation: reads pass, changes are refused", func(t *testing.T) {
			ro := login(t, ngx.URL, mint(t, "http://"+svcAddr, secret, "Read only"))
			status, body := send(t, http.MethodGet, "/account", request{cookie: true, inject: true, roCookie: ro})
			var got seen
			if status != http.StatusOK || json.Unmarshal(body, &got) != nil {
				t.Fatalf("GET: %d %s", status, body)
			}
			if want := (seen{Subject: []string{"42"}, Actor: []string{"ada@example.com"}, Scope: []string{"read"}}); !reflect.DeepEqual(got, want) {
				t.Errorf("GET: the app saw %+v, want %+v", got, want)
			}
			before := writes.Load()
			for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
				if status, body := send(t, method, "/account", request{cookie: true, roCookie: ro}); status != http.StatusForbidden {
					t.Errorf("%s: %d %s, want 403", method, status, body)
				}
			}
			if n := writes.Load() - before; n != 0 {
				t.Errorf("the app received %d changes under a read-only impersonation, want none", n)
			}
		})
	})

	svc.stop()
	whileDown := append([]request{
		{name: "cookie", cookie: true, want: notImpersonating},
		{name: "cookie, injected headers", cookie: true, inject: true, want: notImpersonating},
	}, everyClient...)
	t.Run("impersonator stopped", func(t *testing.T) { run(t, whileDown) })

	// Redis down: the session endpoint answers 503. A stub on the service's
	// address plays it (the embedded Redis cannot fail on its own).
	stub(t, svcAddr, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"unavailable"}`)
	}, func() {
		t.Run("impersonator answers 503", func(t *testing.T) { run(t, whileDown) })
	})

	// A hung impersonator: past the block's proxy_read_timeout (3s), not
	// impersonating, rather than nginx's default 60s wait.
	stub(t, svcAddr, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	}, func() {
		t.Run("impersonator hung", func(t *testing.T) {
			start := time.Now()
			run(t, []request{{name: "cookie", cookie: true, want: notImpersonating}})
			took := time.Since(start)
			t.Logf("GET and POST answered in %s", took.Round(time.Millisecond))
			if took > 10*time.Second {
				t.Errorf("GET and POST took %s: the auth request's timeouts are not the README's", took)
			}
		})
	})

	t.Run("no token in nginx's logs", func(t *testing.T) {
		access := readFile(ngx.AccessLog)
		if !strings.Contains(access, "POST /impersonation/login") || !strings.Contains(access, "GET /account") {
			t.Fatalf("access log lacks the requests made:\n%s", access)
		}
		for name, log := range map[string]string{"access log": access, "error log": ngx.ErrorLogText()} {
			for what, secret := range map[string]string{"impersonation token": impToken, "session cookie": cookie.Value} {
				if strings.Contains(log, secret) {
					t.Errorf("nginx's %s holds the %s", name, what)
				}
			}
		}
	})
}

// moduleRoot walks up from the working directory to the go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

func buildService(t *testing.T, root string) string {
	t.Helper()
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

type service struct {
	once sync.Once
	cmd  *exec.Cmd
	done chan struct{}
}

// stop kills the service (as a crash or an operator would) and waits for it.
func (s *service) stop() {
	s.once.Do(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
}

// startService runs the service binary with env (and none of the caller's
// service variables), waits for /healthz and kills it at cleanup.
func startService(t *testing.T, bin, addr string, env map[string]string) *service {
	t.Helper()
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
	s := &service{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logFile.Close()
		close(s.done)
	}()
	t.Cleanup(s.stop)

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
			t.Fatalf("impersonator exited at start:\n%s", readFile(logName))
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("impersonator not healthy on %s:\n%s", addr, readFile(logName))
		}
	}
}

// mint runs the Forest Impersonate action on users 42 as ada@example.com
// and returns the impersonation token of the redirect answer.
func mint(t *testing.T, base, secret, access string) string {
	t.Helper()
	admin, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"id": "1001", "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace",
		"team": "Support", "role": "Admin", "permissionLevel": "admin", "renderingId": 1,
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
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

// login posts the token through nginx as the start page does and returns
// the session cookie.
func login(t *testing.T, base, tok string) *http.Cookie {
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

// stub serves h on addr (the stopped service's address) while during runs.
func stub(t *testing.T, addr string, h http.HandlerFunc, during func()) {
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
