package nginxtest

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

	"github.com/impersonator/impersonator/internal/proxytest"
	"github.com/impersonator/impersonator/internal/redistest"
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

	bin := proxytest.BuildService(t, root)
	ngx := Start(t, ngxAddr, block)
	secret := proxytest.Secret(t)
	redis := redistest.StartServer(t)
	svc := proxytest.StartService(t, bin, svcAddr, map[string]string{
		"REDIS_URL":                 redis.URL(),
		"IMPERSONATOR_LISTEN":       svcAddr,
		"IMPERSONATOR_PUBLIC_URL":   ngx.URL,
		"IMPERSONATOR_APP_URL":      ngx.URL,
		"IMPERSONATOR_KEYS_DIR":     proxytest.Keys(t, bin),
		"FOREST_AUTH_SECRET":        secret,
		"IMPERSONATOR_DELIVERY":     "redirect",
		"IMPERSONATOR_LOG_LEVEL":    "warn",
		"IMPERSONATOR_LOGIN_RATE":   "0",
		"IMPERSONATOR_SESSION_TTL":  "30m",
		"IMPERSONATOR_ADMIN_TOKENS": proxytest.AdminToken,
	})

	impToken := proxytest.Mint(t, "http://"+svcAddr, secret, "")
	cookie := proxytest.Login(t, ngx.URL, impToken)

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
			ro := proxytest.Login(t, ngx.URL, proxytest.Mint(t, "http://"+svcAddr, secret, "Read only"))
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
		c := proxytest.Login(t, ngx.URL, proxytest.Mint(t, "http://"+svcAddr, secret, ""))
		run(t, []request{{name: "live", cookie: true, roCookie: c, want: impersonating}})
		proxytest.Revoke(t, "http://"+svcAddr, c)
		run(t, []request{
			{name: "revoked", cookie: true, roCookie: c, want: notImpersonating},
			{name: "revoked, injected headers", cookie: true, inject: true, roCookie: c, want: notImpersonating},
		})
	})

	// Redis hung (frozen, connections open, nothing answered): a session
	// this instance has not checked yet is not impersonating once the
	// service's Redis timeout (3s) or nginx's read timeout (3s) passes; a
	// session it checked before is answered from its memory.
	t.Run("Redis hung", func(t *testing.T) {
		fresh := proxytest.Login(t, ngx.URL, proxytest.Mint(t, "http://"+svcAddr, secret, ""))
		redis.Pause()
		defer redis.Resume()
		timed := func(t *testing.T, r request) (seen, time.Duration) {
			t.Helper()
			start := time.Now()
			status, body := send(t, http.MethodGet, "/account", r)
			took := time.Since(start)
			var got seen
			if status != http.StatusOK || json.Unmarshal(body, &got) != nil {
				t.Fatalf("%d %s, want 200 from the app", status, body)
			}
			return got, took
		}
		if got, took := timed(t, request{inject: true}); !reflect.DeepEqual(got, notImpersonating) || took > 500*time.Millisecond {
			t.Errorf("no cookie: the app saw %+v after %s, want not impersonating at once", got, took)
		}
		got, took := timed(t, request{cookie: true, roCookie: fresh, inject: true})
		if !reflect.DeepEqual(got, notImpersonating) || took > 5*time.Second {
			t.Errorf("a session not checked before: the app saw %+v after %s, want not impersonating within 5s", got, took)
		}
		t.Logf("a session not checked before: not impersonating after %s", took.Round(time.Millisecond))
		// What the README's failure table says: the instance's memory
		// answers for it, as it does while Redis is up.
		if got, took = timed(t, request{cookie: true, inject: true}); !reflect.DeepEqual(got, impersonating) || took > 500*time.Millisecond {
			t.Errorf("a session checked before: the app saw %+v after %s, want impersonating at once (from memory)", got, took)
		}
		// The session endpoint itself, as an app that introspects sees it:
		// 200 from memory at once, or 503 at the route's own 3s deadline
		// (redisurl turns on go-redis's ContextTimeoutEnabled; without it,
		// go-redis's read and pool timeouts made it 12s). The README's
		// failure table says so.
		for _, c := range []struct {
			name   string
			cookie *http.Cookie
			want   int
			within time.Duration
		}{{"not checked before", fresh, http.StatusServiceUnavailable, 4 * time.Second}, {"checked before", cookie, http.StatusOK, 500 * time.Millisecond}} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+svcAddr+"/impersonation/session", nil)
			req.AddCookie(c.cookie)
			start := time.Now()
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			took := time.Since(start)
			if res.StatusCode != c.want || took > c.within || len(res.Header.Values("Set-Cookie")) != 0 {
				t.Errorf("session endpoint, %s: %d after %s (Set-Cookie %q), want %d within %s and no Set-Cookie", c.name, res.StatusCode, took, res.Header.Values("Set-Cookie"), c.want, c.within)
			}
			t.Logf("session endpoint, Redis hung, %s: %d after %s", c.name, res.StatusCode, took.Round(time.Millisecond))
		}
	})

	svc.Stop()
	whileDown := append([]request{
		{name: "cookie", cookie: true, want: notImpersonating},
		{name: "cookie, injected headers", cookie: true, inject: true, want: notImpersonating},
	}, everyClient...)
	t.Run("impersonator stopped", func(t *testing.T) { run(t, whileDown) })

	// Redis down: the session endpoint answers 503. A stub on the service's
	// address plays it (the embedded Redis cannot fail on its own).
	proxytest.Stub(t, svcAddr, func(w http.ResponseWriter, r *http.Request) {
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
	proxytest.Hung(t, svcAddr, func(accepted *atomic.Int32) {
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
