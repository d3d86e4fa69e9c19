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

// configFile is the shipped nginx configuration, relative to the module root.
const configFile = "examples/nginx/impersonator.conf"

// The configuration's placeholders for the service and the app.
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

// TestReadmeForwardAuth runs the shipped nginx configuration,
// examples/nginx/impersonator.conf, as written (and checks that the README
// shows it verbatim), between a real nginx, the real service (built from
// this module) and a fake app, and checks that it fails safe: with
// impersonator stopped, failing or hung the app still answers, as not
// impersonating; only requests that carry the session cookie wait on
// impersonator; a client never gets its own X-Impersonation-* headers to
// the app; a read-only refusal is an HTML page; the app's own failures are
// not replayed; and no token reaches nginx's logs.
func TestReadmeForwardAuth(t *testing.T) {
	root := moduleRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join(root, configFile))
	if err != nil {
		t.Fatal(err)
	}
	block := string(shipped)
	shown, err := Snippet(readme, "nginx-forward-auth")
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if shown != block {
		t.Fatalf("README's nginx block differs from %s: copy the file into the README", configFile)
	}
	for _, placeholder := range []string{readmeService, readmeApp} {
		if !strings.Contains(block, placeholder) {
			t.Fatalf("%s no longer mentions %s:\n%s", configFile, placeholder, block)
		}
	}
	if _, err := Binary(); err != nil {
		t.Fatal(err) // never skip: the configuration is unproven without nginx
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
		"REDIS_URL":                 "",
		"IMPERSONATOR_LISTEN":       svcAddr,
		"IMPERSONATOR_PUBLIC_URL":   ngx.URL,
		"IMPERSONATOR_APP_URL":      ngx.URL,
		"IMPERSONATOR_KEYS_DIR":     t.TempDir(),
		"FOREST_AUTH_SECRET":        secret,
		"IMPERSONATOR_DELIVERY":     "redirect",
		"IMPERSONATOR_LOG_LEVEL":    "warn",
		"IMPERSONATOR_LOGIN_RATE":   "0",
		"IMPERSONATOR_SESSION_TTL":  "30m",
		"IMPERSONATOR_ADMIN_TOKENS": adminToken,
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
	sendFull := func(t *testing.T, method, path string, r request) (*http.Response, []byte) {
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
		return res, body
	}
	send := func(t *testing.T, method, path string, r request) (int, []byte) {
		t.Helper()
		res, body := sendFull(t, method, path, r)
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
				res, body := sendFull(t, method, "/account", request{cookie: true, roCookie: ro})
				if res.StatusCode != http.StatusForbidden {
					t.Errorf("%s: %d %s, want 403", method, res.StatusCode, body)
				}
				// An HTML page that says why, not nginx's bare "403 Forbidden".
				if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Errorf("%s: Content-Type %q, want text/html; charset=utf-8", method, ct)
				}
				if !strings.Contains(string(body), `<p id="impersonation-read-only">You are viewing this account read-only`) || strings.Contains(string(body), "nginx") {
					t.Errorf("%s: 403 page %q, want the read-only page", method, body)
				}
			}
			if n := writes.Load() - before; n != 0 {
				t.Errorf("the app received %d changes under a read-only impersonation, want none", n)
			}
		})
	})

	t.Run("revoked session: not impersonating", func(t *testing.T) {
		c := login(t, ngx.URL, mint(t, "http://"+svcAddr, secret, ""))
		run(t, []request{{name: "live", cookie: true, roCookie: c, want: impersonating}})
		revoke(t, "http://"+svcAddr, c)
		run(t, []request{
			{name: "revoked", cookie: true, roCookie: c, want: notImpersonating},
			{name: "revoked, injected headers", cookie: true, inject: true, roCookie: c, want: notImpersonating},
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

	// A hung impersonator: a listener on its address that accepts
	// connections and never reads nor answers. A request without the
	// cookie never waits on it (no connection at all); one with the cookie
	// is not impersonating past the configuration's proxy_read_timeout
	// (3s), rather than nginx's default 60s wait.
	hung(t, svcAddr, func(accepted *atomic.Int32) {
		t.Run("impersonator hung", func(t *testing.T) {
			fast := func(t *testing.T, n int) {
				t.Helper()
				for i := range n {
					start := time.Now()
					status, body := send(t, http.MethodGet, "/account", request{inject: i%2 == 1})
					took := time.Since(start)
					var got seen
					if status != http.StatusOK || json.Unmarshal(body, &got) != nil || !reflect.DeepEqual(got, notImpersonating) {
						t.Fatalf("no cookie: %d %s, want 200 not impersonating", status, body)
					}
					if took > 500*time.Millisecond {
						t.Errorf("a request without the cookie took %s while impersonator hangs", took)
					}
				}
			}
			fast(t, 10)
			if n := accepted.Load(); n != 0 {
				t.Fatalf("requests without the cookie opened %d connections to impersonator, want none", n)
			}
			// Cookie requests in flight, hanging on impersonator: other
			// users are still served at once.
			type result struct {
				status int
				body   []byte
				took   time.Duration
			}
			results := make(chan result, 4)
			for i := range cap(results) {
				method := http.MethodGet
				if i%2 == 1 {
					method = http.MethodPost
				}
				go func() {
					start := time.Now()
					res, body := sendFull(t, method, "/account", request{cookie: true, inject: true})
					results <- result{res.StatusCode, body, time.Since(start)}
				}()
			}
			for deadline := time.Now().Add(2 * time.Second); accepted.Load() < int32(cap(results)) && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if n := accepted.Load(); n != int32(cap(results)) {
				t.Fatalf("impersonator accepted %d connections, want one per cookie request (%d)", n, cap(results))
			}
			fast(t, 10)
			for range cap(results) {
				r := <-results
				var got seen
				if r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil || !reflect.DeepEqual(got, notImpersonating) {
					t.Errorf("cookie: %d %s, want 200 not impersonating", r.status, r.body)
				}
				// proxy_read_timeout 3s, and CPU contention's margin.
				if r.took < 2500*time.Millisecond || r.took > 6*time.Second {
					t.Errorf("cookie request answered in %s, want past the 3s read timeout and soon after", r.took)
				}
				t.Logf("cookie request: not impersonating after %s", r.took.Round(time.Millisecond))
			}
			if n := accepted.Load(); n != int32(cap(results)) {
				t.Errorf("impersonator accepted %d connections, want %d: requests without the cookie reached it", n, cap(results))
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

// adminToken is the service's IMPERSONATOR_ADMIN_TOKENS in these tests.
const adminToken = "nginxtest-admin-token-0123456789abcdefghij"

// revoke revokes the session of c through the admin API, as
// `impersonator sessions revoke` does.
func revoke(t *testing.T, base string, c *http.Cookie) {
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
	req.Header.Set("Authorization", "Bearer "+adminToken)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d, want 204", res.StatusCode)
	}
}

// hung listens on addr (the stopped service's address), accepts every
// connection and never reads from nor answers it, while during runs;
// during gets the count of accepted connections.
func hung(t *testing.T, addr string, during func(accepted *atomic.Int32)) {
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
