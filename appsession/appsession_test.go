package appsession_test

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/appsession"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/servicetest"
	"github.com/impersonator/impersonator/internal/token"
)

const audience = "http://localhost:3000" // the service's default IMPERSONATOR_APP_URL

const adminToken = "appsession-test-admin-token-0123456789abcdef"

// bin is the service's binary, built once for this package's tests.
var bin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() { // servicetest.Start skips every test that needs bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "appsession-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, err = servicetest.BuildInto(dir)
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// seen is what the app's handler saw.
type seen struct {
	Impersonating bool   `json:"impersonating"`
	SessionID     string `json:"session_id"`
	Subject       string `json:"subject"`
	Collection    string `json:"collection"`
	Actor         string `json:"actor"`
	ActorID       string `json:"actor_id"`
	Scope         string `json:"scope"`
	Reason        string `json:"reason"`
	Expires       bool   `json:"expires"`
}

// app is a customer app behind check's middleware; calls counts the
// requests its own handler ran.
type app struct {
	*httptest.Server
	calls atomic.Int32
}

func newApp(t *testing.T, check *appsession.Checker) *app {
	t.Helper()
	a := &app{}
	a.Server = httptest.NewServer(check.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		var s seen
		if imp, ok := appsession.FromContext(r.Context()); ok {
			s = seen{true, imp.SessionID, imp.Subject, imp.Collection, imp.Actor.Email, imp.Actor.ID, imp.Scope, imp.Reason, !imp.ExpiresAt.IsZero()}
		}
		json.NewEncoder(w).Encode(s)
	})))
	t.Cleanup(a.Close)
	return a
}

// do sends method to the app with the cookie (none when nil) and returns
// the status, what the handler saw, and how long it took.
func (a *app) do(t *testing.T, method string, ck *http.Cookie, hdr ...string) (int, seen, time.Duration) {
	t.Helper()
	req, err := http.NewRequest(method, a.URL+"/account", strings.NewReader("a=1"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Cookie", "app_session=own-login")
	if ck != nil {
		req.Header.Set("Cookie", "app_session=own-login; "+ck.Name+"="+ck.Value)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	took := time.Since(start)
	body, _ := io.ReadAll(res.Body)
	var s seen
	if res.StatusCode == http.StatusOK && method != http.MethodHead {
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("app answer %q: %v", body, err)
		}
	}
	return res.StatusCode, s, took
}

// sid returns the session id a session cookie names (read, not verified).
func sid(t *testing.T, ck *http.Cookie) string {
	t.Helper()
	parts := strings.Split(ck.Value, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.SID == "" {
		t.Fatalf("session cookie's claims %s: %v", raw, err)
	}
	return c.SID
}

// logBuffer collects a checker's log, safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newChecker(t *testing.T, svc *servicetest.Service, log *logBuffer) *appsession.Checker {
	t.Helper()
	check, err := appsession.New(appsession.Config{
		PublicURL: svc.Env["IMPERSONATOR_PUBLIC_URL"], Audience: audience, ServiceURL: svc.URL,
		Log: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return check
}

// serviceKeys writes a signing key into a new keys folder and returns the
// folder and the key: the test signs cookies the service would sign.
func serviceKeys(t *testing.T) (string, *token.Keyset) {
	t.Helper()
	dir := t.TempDir()
	if _, err := token.WriteNew(dir, token.AlgEdDSA, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	keys, err := token.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, keys
}

// TestMiddleware runs the Go middleware in a customer app against the real
// service (built from this module, on a real redis-server): every case of
// README "The customer app: seeing the session".
func TestMiddleware(t *testing.T) {
	addr := servicetest.FreeAddr(t)
	keysDir, keys := serviceKeys(t)
	redis := redistest.StartServer(t)
	svc := servicetest.Start(t, bin, map[string]string{
		"IMPERSONATOR_LISTEN":       addr,
		"IMPERSONATOR_PUBLIC_URL":   "http://" + addr,
		"REDIS_URL":                 redis.URL(),
		"IMPERSONATOR_KEYS_DIR":     keysDir,
		"FOREST_AUTH_SECRET":        servicetest.Secret(t),
		"IMPERSONATOR_LOGIN_RATE":   "0",
		"IMPERSONATOR_LOG_LEVEL":    "warn",
		"IMPERSONATOR_ADMIN_TOKENS": adminToken,
	})
	log := &logBuffer{}
	a := newApp(t, newChecker(t, svc, log))
	var cookies []*http.Cookie // every session cookie: none may reach the log
	impersonate := func(t *testing.T, id, access string) *http.Cookie {
		ck := svc.Impersonate(t, id, access)
		cookies = append(cookies, ck)
		return ck
	}
	t.Cleanup(func() {
		text := log.String()
		for _, ck := range cookies {
			if strings.Contains(text, ck.Value) || strings.Contains(text, strings.Split(ck.Value, ".")[2]) {
				t.Errorf("the middleware's log holds a session cookie:\n%s", text)
			}
		}
		if !strings.Contains(text, "sid=") || !strings.Contains(text, "cookie refused") {
			t.Errorf("the middleware's log names no session id or refusal:\n%s", text)
		}
	})

	t.Run("no cookie: not impersonating, every method reaches the app", func(t *testing.T) {
		for _, m := range []string{"GET", "POST", "DELETE"} {
			before := a.calls.Load()
			code, s, _ := a.do(t, m, nil)
			if code != 200 || s.Impersonating || a.calls.Load() != before+1 {
				t.Errorf("%s without a cookie = %d %+v (handler ran %d times), want 200, not impersonating, once", m, code, s, a.calls.Load()-before)
			}
		}
	})

	t.Run("full access: the impersonation in the context, changes allowed", func(t *testing.T) {
		ck := impersonate(t, "42", "Full access")
		if ck.Name != "impersonation_session" {
			t.Fatalf("cookie name under an http public URL = %q", ck.Name)
		}
		code, s, _ := a.do(t, "GET", ck)
		want := seen{true, sid(t, ck), "42", "users", "ada@example.com", "1001", "full", "ticket 2121: the app's middleware test", true}
		if code != 200 || s != want {
			t.Errorf("GET = %d %+v, want 200 %+v", code, s, want)
		}
		if code, s, _ := a.do(t, "POST", ck); code != 200 || !s.Impersonating {
			t.Errorf("POST under full access = %d %+v, want 200 impersonating", code, s)
		}

		// The activity trail records forward-auth checks, which name the
		// request (X-Forwarded-Method, X-Forwarded-Uri); the middleware's
		// checks do not, so they are not in it. Control: one forward-auth
		// check is.
		requests := func() int {
			time.Sleep(600 * time.Millisecond) // the trail is written every 200 ms
			req, _ := http.NewRequest(http.MethodGet, svc.URL+"/v1/sessions/"+sid(t, ck)+"/activity", nil)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var page struct{ Requests int }
			if res.StatusCode == http.StatusNotFound {
				return 0
			}
			if err := json.NewDecoder(res.Body).Decode(&page); err != nil || res.StatusCode != 200 {
				t.Fatalf("activity: %d %v", res.StatusCode, err)
			}
			return page.Requests
		}
		if n := requests(); n != 0 {
			t.Errorf("the middleware's checks are in the activity trail: %d requests, want 0", n)
		}
		req, _ := http.NewRequest(http.MethodGet, svc.URL+"/impersonation/session", nil)
		req.AddCookie(ck)
		req.Header.Set("X-Forwarded-Method", "GET")
		req.Header.Set("X-Forwarded-Uri", "/account")
		if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
			t.Fatalf("forward-auth check: %v %v", res, err)
		} else {
			res.Body.Close()
		}
		if n := requests(); n != 1 {
			t.Errorf("control: one forward-auth check gave %d trail entries, want 1", n)
		}
	})

	t.Run("read only: reads impersonated, changes 403 before the app", func(t *testing.T) {
		ck := impersonate(t, "43", "Read only")
		for _, m := range []string{"GET", "HEAD", "OPTIONS"} {
			code, s, _ := a.do(t, m, ck)
			if code != 200 || (m != "HEAD" && (!s.Impersonating || s.Scope != "read" || s.Subject != "43")) {
				t.Errorf("%s = %d %+v, want 200 impersonating 43 read-only", m, code, s)
			}
		}
		for _, c := range []struct {
			method string
			hdr    []string
		}{
			{"POST", nil}, {"PUT", nil}, {"PATCH", nil}, {"DELETE", nil}, {"PROPFIND", nil},
			{"GET", []string{"X-HTTP-Method-Override", "DELETE"}},
			{"GET", []string{"X-HTTP-Method", "PUT"}},
			{"GET", []string{"X-Method-Override", "post"}},
		} {
			before := a.calls.Load()
			code, _, _ := a.do(t, c.method, ck, c.hdr...)
			if code != http.StatusForbidden || a.calls.Load() != before {
				t.Errorf("%s %v under read-only = %d (handler ran %d times), want 403 and never the app", c.method, c.hdr, code, a.calls.Load()-before)
			}
		}
		// Control: the same change without the cookie is the browser's own.
		if code, s, _ := a.do(t, "POST", nil); code != 200 || s.Impersonating {
			t.Errorf("POST without the cookie = %d %+v, want 200 not impersonating", code, s)
		}
	})

	t.Run("a cookie that does not verify: not impersonating", func(t *testing.T) {
		live := impersonate(t, "44", "")
		claims := token.Claims{
			RegisteredClaims: jwt.RegisteredClaims{Subject: "44"},
			Act:              token.Actor{Sub: "1001", Email: "ada@example.com"},
			Collection:       "users", SID: sid(t, live), Scope: "full",
		}
		issue := func(ks *token.Keyset, iss, aud string, at time.Time, k token.Kind, ttl time.Duration) string {
			raw, _, err := token.NewIssuer(ks, iss, aud, func() time.Time { return at }).Issue(k, claims, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}
		otherDir := t.TempDir()
		if _, err := token.WriteNew(otherDir, token.AlgEdDSA, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		other, err := token.LoadDir(otherDir)
		if err != nil {
			t.Fatal(err)
		}
		iss, now := svc.URL, time.Now()
		unknownSID := claims
		unknownSID.SID = token.NewJTI()
		parts := strings.Split(live.Value, ".")
		cases := []struct{ name, value string }{
			{"garbage", "not-a-jwt"},
			{"empty", ""},
			{"signed by another key", issue(other, iss, audience, now, token.Session, time.Hour)},
			{"another key's signature under the service's kid", forgeKid(t, issue(other, iss, audience, now, token.Session, time.Hour), keys.Signer().ID)},
			{"expired, by the service's own key", issue(keys, iss, audience, now.Add(-2*time.Hour), token.Session, time.Hour)},
			{"wrong issuer", issue(keys, "http://evil.example", audience, now, token.Session, time.Hour)},
			{"wrong audience", issue(keys, iss, "http://other-app.example", now, token.Session, time.Hour)},
			{"an impersonation token instead of a session", issue(keys, iss, audience, now, token.Impersonation, time.Minute)},
			{"altered claims", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"1"}`)) + "." + parts[2]},
			{"alg none", unsigned(t, keys.Signer().ID, parts[1])},
		}
		for _, c := range cases {
			code, s, _ := a.do(t, "GET", &http.Cookie{Name: "impersonation_session", Value: c.value})
			if code != 200 || s.Impersonating {
				t.Errorf("%s: %d %+v, want 200 not impersonating", c.name, code, s)
			}
		}
		// Signed by the service's key, valid, but no such session: the
		// service's answer, not the signature, makes an impersonation.
		ck := &http.Cookie{Name: "impersonation_session", Value: issueClaims(t, keys, iss, unknownSID)}
		if code, s, _ := a.do(t, "GET", ck); code != 200 || s.Impersonating {
			t.Errorf("validly signed cookie of no session: %d %+v, want 200 not impersonating", code, s)
		}
		// The live session's cookie under the https name is not the
		// cookie under an http public URL.
		if code, s, _ := a.do(t, "GET", &http.Cookie{Name: "__Host-impersonation_session", Value: live.Value}); code != 200 || s.Impersonating {
			t.Errorf("the cookie under the __Host- name, http public URL: %d %+v, want not impersonating", code, s)
		}
		// Control: the live cookie itself impersonates.
		if code, s, _ := a.do(t, "GET", live); code != 200 || !s.Impersonating || s.Subject != "44" {
			t.Errorf("control: the live cookie = %d %+v, want impersonating 44", code, s)
		}
	})

	// Redis hung (frozen with SIGSTOP, connections open): the service
	// answers a session it checked before from its memory, at once; for
	// another it waits on Redis (3 s, README's failure table), and the
	// middleware gives up after its Timeout: not impersonating.
	t.Run("Redis hung", func(t *testing.T) {
		checked := impersonate(t, "48", "")
		if _, s, _ := a.do(t, "GET", checked); !s.Impersonating {
			t.Fatalf("before Redis hangs: %+v, want impersonating", s)
		}
		fresh := impersonate(t, "49", "")
		redis.Pause()
		defer redis.Resume()
		time.Sleep(appsession.DefaultMaxAge) // the middleware's own answer expires: the service is asked
		if code, s, took := a.do(t, "GET", nil); code != 200 || s.Impersonating || took > 500*time.Millisecond {
			t.Errorf("no cookie: %d %+v after %s, want not impersonating at once", code, s, took)
		}
		code, s, took := a.do(t, "GET", checked)
		if code != 200 || !s.Impersonating || took > 500*time.Millisecond {
			t.Errorf("a session the service checked before: %d %+v after %s, want impersonating at once (the service's memory)", code, s, took)
		}
		t.Logf("Redis hung, a session the service checked before: impersonating after %s", took.Round(time.Millisecond))
		code, s, took = a.do(t, "GET", fresh)
		if code != 200 || s.Impersonating || took > appsession.DefaultTimeout+time.Second {
			t.Errorf("a session the service did not check before: %d %+v after %s, want not impersonating after about the Timeout %s", code, s, took, appsession.DefaultTimeout)
		}
		t.Logf("Redis hung, a session the service did not check before: not impersonating after %s", took.Round(time.Millisecond))
	})

	// ends measures, for each way a session ends, the time from the end
	// (the command's or request's return) to the app's first request that
	// is not impersonated, polling every 20 ms with the answer cached just
	// before the end (the worst case).
	ends := []struct {
		name string
		end  func(t *testing.T, ck *http.Cookie)
	}{
		{"impersonator sessions revoke", func(t *testing.T, ck *http.Cookie) {
			out := svc.CLI(t, "sessions", "revoke", sid(t, ck))
			if !strings.Contains(out, "revoked") {
				t.Fatalf("sessions revoke printed %q", out)
			}
		}},
		{"logout", func(t *testing.T, ck *http.Cookie) {
			req, _ := http.NewRequest(http.MethodPost, svc.URL+"/impersonation/logout", nil)
			req.AddCookie(ck)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusNoContent {
				t.Fatalf("logout = %d", res.StatusCode)
			}
		}},
	}
	for _, e := range ends {
		t.Run("ends within the bound: "+e.name, func(t *testing.T) {
			ck := impersonate(t, "45", "")
			if _, s, _ := a.do(t, "GET", ck); !s.Impersonating {
				t.Fatalf("before the end: %+v, want impersonating", s)
			}
			e.end(t, ck)
			ended := time.Now()
			last, first := untilNotImpersonating(t, a, ck, ended)
			t.Logf("%s: last impersonated request sent %s after the end, first refused one answered %s after it",
				e.name, last.Round(time.Millisecond), first.Round(time.Millisecond))
			// The service learns of the CLI's revocation through Redis
			// pub/sub, milliseconds later: an answer it gave in between
			// is the only slack.
			const propagation = 250 * time.Millisecond
			if last > appsession.DefaultMaxAge+propagation || first >= 5*time.Second {
				t.Errorf("impersonated a request sent %s after the end (first refusal at %s), want at most MaxAge %s + the service's propagation (and under 5s)", last, first, appsession.DefaultMaxAge)
			}
			// And it stays ended: the ended answer is kept.
			if _, s, _ := a.do(t, "GET", ck); s.Impersonating {
				t.Errorf("impersonating again after the end: %+v", s)
			}
		})
	}

	t.Run("the README's introspection request", func(t *testing.T) {
		ck := impersonate(t, "47", "Read only")
		client := &http.Client{Timeout: time.Second} // curl --max-time 1
		ask := func(method string) (int, map[string]any) {
			req, _ := http.NewRequest(http.MethodGet, svc.URL+"/impersonation/session", nil)
			req.Header.Set("Cookie", "impersonation_session="+ck.Value)
			if method != "" {
				req.Header.Set("X-Forwarded-Method", method)
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body map[string]any
			json.NewDecoder(res.Body).Decode(&body)
			return res.StatusCode, body
		}
		code, body := ask("")
		for _, k := range []string{"session_id", "subject", "collection", "actor", "reason", "started_at", "expires_at", "scope"} {
			if _, ok := body[k]; !ok {
				t.Errorf("200 answer lacks %q: %v", k, body)
			}
		}
		if code != 200 || body["subject"] != "47" || body["scope"] != "read" || body["session_id"] != sid(t, ck) {
			t.Errorf("without X-Forwarded-Method = %d %v, want 200, subject 47, scope read", code, body)
		}
		if code, _ := ask("GET"); code != 200 {
			t.Errorf("X-Forwarded-Method GET = %d, want 200", code)
		}
		if code, _ := ask("POST"); code != http.StatusForbidden {
			t.Errorf("X-Forwarded-Method POST, read-only = %d, want 403", code)
		}
		svc.CLI(t, "sessions", "revoke", sid(t, ck))
		if code, _ := ask(""); code != http.StatusUnauthorized {
			t.Errorf("after the end = %d, want 401", code)
		}
	})

	// Last: the service goes away. A warm app (JWKS and a live answer in
	// hand) stops impersonating within MaxAge; a fresh one never starts;
	// a hung service costs a request at most Timeout.
	t.Run("service stopped or hung: never impersonates", func(t *testing.T) {
		ck := impersonate(t, "46", "Read only")
		if _, s, _ := a.do(t, "GET", ck); !s.Impersonating {
			t.Fatalf("before the stop: %+v, want impersonating", s)
		}
		svc.Stop()
		stopped := time.Now()
		last, first := untilNotImpersonating(t, a, ck, stopped)
		t.Logf("service stopped: last impersonated request sent %s after the stop, first refused one answered %s after it",
			last.Round(time.Millisecond), first.Round(time.Millisecond))
		if last > appsession.DefaultMaxAge || first >= 5*time.Second {
			t.Errorf("impersonated a request sent %s after the service stopped, want at most MaxAge %s", last, appsession.DefaultMaxAge)
		}
		// Read-only cookie, service down: not impersonating, so a change
		// is the browser's own (the app's own login decides), as nginx's
		// block does.
		if code, s, _ := a.do(t, "POST", ck); code != 200 || s.Impersonating {
			t.Errorf("POST with the service stopped = %d %+v, want 200 not impersonating", code, s)
		}
		fresh := newApp(t, newChecker(t, svc, log))
		if code, s, _ := fresh.do(t, "GET", ck); code != 200 || s.Impersonating {
			t.Errorf("fresh app, service stopped: %d %+v, want 200 not impersonating", code, s)
		}

		// A service that accepts connections and never answers.
		var ln net.Listener
		var err error
		for range 50 {
			if ln, err = net.Listen("tcp", svc.Addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("listen on the service's address: %v", err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close() // held open, never answered
			}
		}()
		time.Sleep(appsession.DefaultMaxAge) // the failure answer above expires
		for _, app := range []*app{a, fresh} {
			code, s, took := app.do(t, "GET", ck)
			if code != 200 || s.Impersonating {
				t.Errorf("service hung: %d %+v, want 200 not impersonating", code, s)
			}
			if took > appsession.DefaultTimeout+time.Second {
				t.Errorf("service hung: the request took %s, want about the Timeout %s", took, appsession.DefaultTimeout)
			}
			t.Logf("service hung: a request with the cookie took %s", took.Round(time.Millisecond))
		}
	})
}

// untilNotImpersonating sends GETs with ck every 20 ms until one is not
// impersonated, and returns when the last impersonated one was sent and
// when the first other one was answered, each after since. Its decision
// came after its sending, so "sent at most MaxAge after the end" is a
// bound checked without slack for the test's own delays.
func untilNotImpersonating(t *testing.T, a *app, ck *http.Cookie, since time.Time) (last, first time.Duration) {
	t.Helper()
	for {
		sent := time.Now()
		_, s, _ := a.do(t, "GET", ck)
		if !s.Impersonating {
			return last, time.Since(since)
		}
		last = sent.Sub(since)
		if time.Since(since) > 10*time.Second {
			t.Fatal("still impersonating 10s later")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCookieNameFollowsPublicURL: under an https public URL the service
// names its cookie __Host-impersonation_session, and so does the
// middleware; the unprefixed name, which a sibling subdomain could set, is
// not read.
func TestCookieNameFollowsPublicURL(t *testing.T) {
	keysDir, _ := serviceKeys(t)
	const public = "https://app.example.test"
	svc := servicetest.Start(t, bin, map[string]string{
		"IMPERSONATOR_PUBLIC_URL": public,
		"REDIS_URL":               redistest.StartServer(t).URL(),
		"IMPERSONATOR_KEYS_DIR":   keysDir,
		"FOREST_AUTH_SECRET":      servicetest.Secret(t),
		"IMPERSONATOR_LOG_LEVEL":  "warn",
	})
	a := newApp(t, newChecker(t, svc, &logBuffer{}))
	ck := svc.Impersonate(t, "42", "")
	if ck.Name != "__Host-impersonation_session" || appsession.CookieName(public) != ck.Name {
		t.Fatalf("service's cookie %q, CookieName %q: want both __Host-impersonation_session", ck.Name, appsession.CookieName(public))
	}
	if code, s, _ := a.do(t, "GET", ck); code != 200 || !s.Impersonating || s.Subject != "42" {
		t.Errorf("__Host- cookie = %d %+v, want impersonating 42", code, s)
	}
	if code, s, _ := a.do(t, "GET", &http.Cookie{Name: "impersonation_session", Value: ck.Value}); code != 200 || s.Impersonating {
		t.Errorf("unprefixed cookie under an https public URL = %d %+v, want not impersonating", code, s)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	_, err := appsession.New(appsession.Config{PublicURL: "app.example.com", ServiceURL: "ftp://x", MaxAge: 5 * time.Second, Timeout: 6 * time.Second})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"PublicURL", "Audience", "ServiceURL", "MaxAge", "Timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if _, err := appsession.New(appsession.Config{PublicURL: "https://app.example.com/", Audience: "https://app.example.com"}); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
}

func issueClaims(t *testing.T, keys *token.Keyset, iss string, c token.Claims) string {
	t.Helper()
	raw, _, err := token.NewIssuer(keys, iss, audience, time.Now).Issue(token.Session, c, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// forgeKid rewrites raw's header kid (its signature no longer matches).
func forgeKid(t *testing.T, raw, kid string) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	h, _ := json.Marshal(map[string]string{"alg": "EdDSA", "typ": "impersonation-session+jwt", "kid": kid})
	return base64.RawURLEncoding.EncodeToString(h) + "." + parts[1] + "." + parts[2]
}

// unsigned is an alg-none token with the given payload segment.
func unsigned(t *testing.T, kid, payload string) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "impersonation-session+jwt", "kid": kid})
	return base64.RawURLEncoding.EncodeToString(h) + "." + payload + "."
}

// TestServiceCalls counts the middleware's calls to a stand-in service
// (the real one cannot publish a key on demand): concurrent requests of
// one session share one check; a kid the JWKS lacks fetches it again at
// most once per JWKSCooldown, and a key published meanwhile then verifies.
func TestServiceCalls(t *testing.T) {
	t.Parallel()
	_, keys := serviceKeys(t)
	_, newer := serviceKeys(t)
	var jwksCalls, sessionCalls atomic.Int32
	var publishNewer atomic.Bool
	var iss string
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/jwks.json":
			jwksCalls.Add(1)
			if publishNewer.Load() {
				w.Write(newer.JWKS())
				return
			}
			w.Write(keys.JWKS())
		case "/impersonation/session":
			sessionCalls.Add(1)
			time.Sleep(50 * time.Millisecond) // long enough for the requests to meet
			ck, err := r.Cookie("impersonation_session")
			if err != nil {
				http.Error(w, "no cookie", http.StatusUnauthorized)
				return
			}
			parts := strings.Split(ck.Value, ".")
			raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var c struct {
				SID, Sub, Scope string
				Act             struct{ Sub string }
			}
			json.Unmarshal(raw, &c)
			if c.Sub == "ended" {
				http.Error(w, `{"error":"no_session"}`, http.StatusUnauthorized)
				return
			}
			if c.Scope == "" {
				c.Scope = "full"
			}
			json.NewEncoder(w).Encode(map[string]any{"session_id": c.SID, "subject": c.Sub, "collection": "users",
				"actor": map[string]string{"id": c.Act.Sub, "email": "ada@example.com"}, "scope": c.Scope})
		}
	}))
	defer svc.Close()
	iss = svc.URL
	check, err := appsession.New(appsession.Config{PublicURL: iss, Audience: audience, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a := newApp(t, check)
	if _, s, _ := a.do(t, "POST", nil); s.Impersonating || jwksCalls.Load() != 0 || sessionCalls.Load() != 0 {
		t.Fatalf("a request without the cookie: %+v, %d JWKS fetches, %d session checks; want not impersonating, none", s, jwksCalls.Load(), sessionCalls.Load())
	}
	claims := token.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "42"}, Act: token.Actor{Sub: "1001"}, Collection: "users", SID: token.NewJTI()}
	ck := &http.Cookie{Name: "impersonation_session", Value: issueClaims(t, keys, iss, claims)}

	var wg sync.WaitGroup
	var impersonated atomic.Int32
	for range 30 {
		wg.Go(func() {
			if _, s, _ := a.do(t, "GET", ck); s.Impersonating {
				impersonated.Add(1)
			}
		})
	}
	wg.Wait()
	if impersonated.Load() != 30 || jwksCalls.Load() != 1 || sessionCalls.Load() != 1 {
		t.Fatalf("30 concurrent requests: %d impersonated, %d JWKS fetches, %d session checks; want 30, 1, 1",
			impersonated.Load(), jwksCalls.Load(), sessionCalls.Load())
	}

	// An ended session's 401 is kept: asked once, even past MaxAge.
	endedClaims := claims
	endedClaims.Subject, endedClaims.SID = "ended", token.NewJTI()
	ended := &http.Cookie{Name: "impersonation_session", Value: issueClaims(t, keys, iss, endedClaims)}
	if _, s, _ := a.do(t, "GET", ended); s.Impersonating {
		t.Fatal("an ended session impersonated")
	}
	endedAsked := sessionCalls.Load()

	// A flood of cookies under a kid the JWKS lacks, within the cooldown:
	// no fetch.
	claims.SID = token.NewJTI()
	unknown := &http.Cookie{Name: "impersonation_session", Value: issueClaims(t, newer, iss, claims)}
	for range 50 {
		if _, s, _ := a.do(t, "GET", unknown); s.Impersonating {
			t.Fatal("a cookie of an unpublished key impersonated")
		}
	}
	if n := jwksCalls.Load(); n != 1 {
		t.Errorf("50 unknown kids within the cooldown fetched the JWKS %d more times, want 0", n-1)
	}
	// The key is published; past the cooldown its kid fetches once.
	publishNewer.Store(true)
	time.Sleep(appsession.JWKSCooldown)
	for range 50 {
		if _, s, _ := a.do(t, "GET", unknown); !s.Impersonating {
			t.Fatal("a cookie of a newly published key did not impersonate after the cooldown")
		}
	}
	if n := jwksCalls.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2 (the first, then once for the new kid)", n)
	}
	before := sessionCalls.Load()
	if _, s, _ := a.do(t, "GET", ended); s.Impersonating || sessionCalls.Load() != before || endedAsked == 0 {
		t.Errorf("the ended session %s later: %+v, asked the service again: %v; want not impersonating, not asked", appsession.JWKSCooldown, s, sessionCalls.Load() != before)
	}

	// Config.ReadOnly answers a change under a read-only impersonation,
	// with the impersonation in its context.
	teapot, err := appsession.New(appsession.Config{PublicURL: iss, Audience: audience, Log: slog.New(slog.DiscardHandler),
		ReadOnly: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			imp, _ := appsession.FromContext(r.Context())
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, imp.Subject)
		})})
	if err != nil {
		t.Fatal(err)
	}
	readClaims := claims
	readClaims.Scope, readClaims.SID = "read", token.NewJTI()
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.AddCookie(&http.Cookie{Name: "impersonation_session", Value: issueClaims(t, newer, iss, readClaims)}) // the JWKS now holds newer
	rec := httptest.NewRecorder()
	teapot.Middleware(http.NotFoundHandler()).ServeHTTP(rec, req)
	if rec.Code != http.StatusTeapot || rec.Body.String() != "42" {
		t.Errorf("custom ReadOnly: %d %q, want 418 \"42\"", rec.Code, rec.Body.String())
	}
}
