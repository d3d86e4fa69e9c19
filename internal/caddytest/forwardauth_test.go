package caddytest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/nginxtest"
	"github.com/impersonator/impersonator/internal/proxytest"
	"github.com/impersonator/impersonator/internal/redistest"
)

// configFile is the shipped Caddy configuration, relative to the module root.
const configFile = "examples/caddy/impersonator.caddy"

// The configuration's placeholders for the service and the app.
const (
	placeholderService = "127.0.0.1:8080"
	placeholderApp     = "127.0.0.1:3000"
)

// seen is what the fake app received: every value of each header (none
// when the header was absent), and the body.
type seen struct {
	Subject []string `json:"subject"`
	Actor   []string `json:"actor"`
	Scope   []string `json:"scope"`
	Body    string   `json:"body"`
}

// TestCaddyForwardAuth runs the shipped Caddy configuration,
// examples/caddy/impersonator.caddy, as written (and checks that the README
// shows it verbatim), between Debian's caddy, the real service and a fake
// app, and checks the same fail-safe as the nginx configuration: a stale
// cookie (401), a stopped, failing or hung impersonator all reach the app
// as not impersonating (never a 401 JSON or a 502 page), only requests
// that carry the cookie wait on impersonator, a client's own
// X-Impersonation-* headers never reach the app, the request's body
// reaches the app intact, a read-only refusal is an HTML page, the app's
// own failures are not replayed, and no credential reaches caddy's logs.
func TestCaddyForwardAuth(t *testing.T) {
	root := proxytest.ModuleRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join(root, configFile))
	if err != nil {
		t.Fatal(err)
	}
	block := string(shipped)
	shown, err := nginxtest.Snippet(readme, "caddy-forward-auth")
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if shown != block {
		t.Fatalf("README's Caddy block differs from %s: copy the file into the README", configFile)
	}
	for _, placeholder := range []string{placeholderService, placeholderApp} {
		if !strings.Contains(block, placeholder) {
			t.Fatalf("%s no longer mentions %s", configFile, placeholder)
		}
	}
	if _, err := Binary(); err != nil {
		t.Fatal(err) // never skip: the configuration is unproven without caddy
	}

	var crashes, writes atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			writes.Add(1)
		}
		if r.URL.Path == "/crash" { // the app itself fails: caddy answers 502
			crashes.Add(1)
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<10))
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen{
			Subject: r.Header.Values("X-Impersonation-Subject"),
			Actor:   r.Header.Values("X-Impersonation-Actor"),
			Scope:   r.Header.Values("X-Impersonation-Scope"),
			Body:    string(body),
		})
	}))
	t.Cleanup(app.Close)

	svcAddr, caddyAddr := nginxtest.FreeAddr(t), nginxtest.FreeAddr(t)
	block = strings.ReplaceAll(block, placeholderService, svcAddr)
	block = strings.ReplaceAll(block, placeholderApp, app.Listener.Addr().String())

	bin := proxytest.BuildService(t, root)
	cdy := Start(t, caddyAddr, block)
	secret := proxytest.Secret(t)
	redis := redistest.StartServer(t)
	svc := proxytest.StartService(t, bin, svcAddr, map[string]string{
		"REDIS_URL":                 redis.URL(),
		"IMPERSONATOR_LISTEN":       svcAddr,
		"IMPERSONATOR_PUBLIC_URL":   cdy.URL,
		"IMPERSONATOR_APP_URL":      cdy.URL,
		"IMPERSONATOR_KEYS_DIR":     proxytest.Keys(t, bin),
		"FOREST_AUTH_SECRET":        secret,
		"IMPERSONATOR_DELIVERY":     "redirect",
		"IMPERSONATOR_LOG_LEVEL":    "warn",
		"IMPERSONATOR_LOGIN_RATE":   "0",
		"IMPERSONATOR_ADMIN_TOKENS": proxytest.AdminToken,
	})

	impToken := proxytest.Mint(t, "http://"+svcAddr, secret, "")
	cookie := proxytest.Login(t, cdy.URL, impToken)

	client := &http.Client{
		Timeout:       25 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	type request struct {
		name   string
		cookie *http.Cookie // the session cookie to send, if any
		inject bool         // send our own X-Impersonation-* headers
		want   seen
	}
	sendFull := func(t *testing.T, method, path string, r request) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, cdy.URL+path, strings.NewReader("a=1"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", "app_pref=dark")
		if r.cookie != nil {
			req.Header.Set("Cookie", "app_pref=dark; "+r.cookie.Name+"="+r.cookie.Value)
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
	// check sends r with GET and POST: 200 from the app, which saw r.want
	// and the request's body (the check's GET never consumed it).
	check := func(t *testing.T, r request) {
		t.Helper()
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			res, body := sendFull(t, method, "/account", r)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d %s, want 200 from the app\ncaddy's log:\n%s", method, res.StatusCode, body, cdy.LogText())
			}
			var got seen
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%s: app answered %s: %v", method, body, err)
			}
			want := r.want
			want.Body = "a=1"
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: the app saw %+v, want %+v", method, got, want)
			}
		}
	}
	run := func(t *testing.T, cases []request) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) { check(t, c) })
		}
	}
	notImpersonating := seen{}
	impersonating := seen{Subject: []string{"42"}, Actor: []string{"ada@example.com"}, Scope: []string{"full"}}
	everyClient := []request{
		{name: "no cookie", want: notImpersonating},
		{name: "no cookie, injected headers", inject: true, want: notImpersonating},
	}

	t.Run("impersonator up", func(t *testing.T) {
		run(t, append([]request{
			{name: "cookie", cookie: cookie, want: impersonating},
			{name: "cookie, injected headers", cookie: cookie, inject: true, want: impersonating},
			{name: "stale cookie (401)", cookie: &http.Cookie{Name: "impersonation_session", Value: "x.y.z"}, inject: true, want: notImpersonating},
		}, everyClient...))
		t.Run("the app's own failure is not replayed as not impersonating", func(t *testing.T) {
			before := crashes.Load()
			res, _ := sendFull(t, http.MethodPost, "/crash", request{cookie: cookie})
			if res.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d, want caddy's 502", res.StatusCode)
			}
			if n := crashes.Load() - before; n != 1 {
				t.Errorf("the app received the failing POST %d times, want once", n)
			}
		})
		t.Run("read-only impersonation: reads pass, changes get the read-only page", func(t *testing.T) {
			ro := proxytest.Login(t, cdy.URL, proxytest.Mint(t, "http://"+svcAddr, secret, "Read only"))
			res, body := sendFull(t, http.MethodGet, "/account", request{cookie: ro, inject: true})
			var got seen
			if res.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil {
				t.Fatalf("GET: %d %s", res.StatusCode, body)
			}
			if want := (seen{Subject: []string{"42"}, Actor: []string{"ada@example.com"}, Scope: []string{"read"}, Body: "a=1"}); !reflect.DeepEqual(got, want) {
				t.Errorf("GET: the app saw %+v, want %+v", got, want)
			}
			before := writes.Load()
			for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
				res, body := sendFull(t, method, "/account", request{cookie: ro})
				if res.StatusCode != http.StatusForbidden {
					t.Errorf("%s: %d %s, want 403", method, res.StatusCode, body)
				}
				if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Errorf("%s: Content-Type %q, want text/html; charset=utf-8", method, ct)
				}
				if !strings.Contains(string(body), `<p id="impersonation-read-only">You are viewing this account read-only`) {
					t.Errorf("%s: 403 page %q, want the read-only page", method, body)
				}
			}
			if n := writes.Load() - before; n != 0 {
				t.Errorf("the app received %d changes under a read-only impersonation, want none", n)
			}
		})
	})

	t.Run("revoked session: not impersonating", func(t *testing.T) {
		c := proxytest.Login(t, cdy.URL, proxytest.Mint(t, "http://"+svcAddr, secret, ""))
		check(t, request{cookie: c, want: impersonating})
		proxytest.Revoke(t, "http://"+svcAddr, c)
		run(t, []request{
			{name: "revoked", cookie: c, want: notImpersonating},
			{name: "revoked, injected headers", cookie: c, inject: true, want: notImpersonating},
		})
	})

	// Redis hung (frozen, connections open, nothing answered): a session
	// this instance has not checked yet is not impersonating once the
	// service's Redis timeout (3s) or caddy's (3s) passes; a session it
	// checked before is answered from its memory.
	t.Run("Redis hung", func(t *testing.T) {
		fresh := proxytest.Login(t, cdy.URL, proxytest.Mint(t, "http://"+svcAddr, secret, ""))
		redis.Pause()
		defer redis.Resume()
		timed := func(r request) time.Duration {
			start := time.Now()
			check(t, r)
			return time.Since(start)
		}
		if took := timed(request{inject: true, want: notImpersonating}); took > time.Second {
			t.Errorf("no cookie: a GET and a POST took %s, want them at once", took)
		}
		took := timed(request{cookie: fresh, inject: true, want: notImpersonating})
		if took > 10*time.Second {
			t.Errorf("a session not checked before: a GET and a POST took %s, want each within 5s", took)
		}
		t.Logf("a session not checked before: a GET and a POST not impersonating after %s", took.Round(time.Millisecond))
		if took := timed(request{cookie: cookie, inject: true, want: impersonating}); took > time.Second {
			t.Errorf("a session checked before: a GET and a POST took %s, want them at once (from memory)", took)
		}
	})

	svc.Stop()
	whileDown := append([]request{
		{name: "cookie", cookie: cookie, want: notImpersonating},
		{name: "cookie, injected headers", cookie: cookie, inject: true, want: notImpersonating},
	}, everyClient...)
	t.Run("impersonator stopped", func(t *testing.T) { run(t, whileDown) })

	// Redis down: the session endpoint answers 503. A stub on the service's
	// address plays it.
	proxytest.Stub(t, svcAddr, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"unavailable"}`)
	}, func() {
		t.Run("impersonator answers 503", func(t *testing.T) { run(t, whileDown) })
	})

	// A hung impersonator: a listener that accepts and never answers.
	proxytest.Hung(t, svcAddr, func(accepted *atomic.Int32) {
		t.Run("impersonator hung", func(t *testing.T) {
			fast := func(t *testing.T, n int) {
				t.Helper()
				for i := range n {
					start := time.Now()
					check(t, request{inject: i%2 == 1, want: notImpersonating})
					if took := time.Since(start); took > time.Second {
						t.Errorf("a GET and a POST without the cookie took %s while impersonator hangs", took)
					}
				}
			}
			fast(t, 5)
			if n := accepted.Load(); n != 0 {
				t.Fatalf("requests without the cookie opened %d connections to impersonator, want none", n)
			}
			done := make(chan time.Duration, 2)
			for range cap(done) {
				go func() {
					start := time.Now()
					res, body := sendFull(t, http.MethodPost, "/account", request{cookie: cookie, inject: true})
					var got seen
					if res.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil || !reflect.DeepEqual(got, seen{Body: "a=1"}) {
						t.Errorf("cookie: %d %s, want 200 not impersonating with the body", res.StatusCode, body)
					}
					done <- time.Since(start)
				}()
			}
			for deadline := time.Now().Add(2 * time.Second); accepted.Load() < int32(cap(done)) && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			fast(t, 5)
			for range cap(done) {
				took := <-done
				// response_header_timeout 3s, and CPU contention's margin.
				if took < 2500*time.Millisecond || took > 6*time.Second {
					t.Errorf("cookie request answered in %s, want past the 3s timeout and soon after", took)
				}
				t.Logf("cookie request: not impersonating after %s", took.Round(time.Millisecond))
			}
			if n := accepted.Load(); n != int32(cap(done)) {
				t.Errorf("impersonator accepted %d connections, want %d", n, cap(done))
			}
		})
	})

	t.Run("no credential in caddy's logs", func(t *testing.T) {
		access := proxytest.ReadFile(cdy.AccessLog)
		if !strings.Contains(access, `"uri":"/impersonation/login"`) || !strings.Contains(access, `"uri":"/account"`) {
			t.Fatalf("access log lacks the requests made:\n%.2000s", access)
		}
		for name, log := range map[string]string{"access log": access, "log": cdy.LogText()} {
			for what, secret := range map[string]string{"impersonation token": impToken, "session cookie": cookie.Value} {
				if strings.Contains(log, secret) {
					t.Errorf("caddy's %s holds the %s", name, what)
				}
			}
		}
	})
}
