package nginxtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/proxytest"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
)

// sessionID introspects c's session at base and returns its id.
func sessionID(t *testing.T, base string, c *http.Cookie) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/impersonation/session", nil)
	req.AddCookie(c)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var s struct {
		SessionID string `json:"session_id"`
	}
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil || s.SessionID == "" {
		t.Fatalf("session: %d %v", res.StatusCode, err)
	}
	return s.SessionID
}

// keysFor is a keys folder with one signing key, made by bin.
func keysFor(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(bin, "keys", "generate", "--dir", dir, "--activate-after", "0").CombinedOutput(); err != nil {
		t.Fatalf("keys generate: %v\n%s", err, out)
	}
	return dir
}

// activityOf reads GET /v1/sessions/{sid}/activity at base once it counts
// want requests.
func activityOf(t *testing.T, base, sid string, want int64) session.ActivityPage {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/sessions/"+sid+"/activity", nil)
		req.Header.Set("Authorization", "Bearer "+proxytest.AdminToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page session.ActivityPage
		err = json.NewDecoder(res.Body).Decode(&page)
		res.Body.Close()
		if err == nil && res.StatusCode == 200 && page.Requests >= want {
			return page
		}
		if time.Now().After(deadline) {
			t.Fatalf("activity of %s: %d %+v, want %d requests", sid, res.StatusCode, page, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestActivityThroughNginx: a session driven through the shipped nginx
// configuration (examples/nginx/impersonator.conf, forward-auth) leaves its
// trail, read back from the admin API and from `impersonator sessions
// show`: each request's method, path without its query string and
// decision, a read-only refusal as deny; requests without the cookie, and
// the service's own routes, are not in it.
func TestActivityThroughNginx(t *testing.T) {
	root := proxytest.ModuleRoot(t)
	shipped, err := os.ReadFile(filepath.Join(root, configFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Binary(); err != nil {
		t.Fatal(err)
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "app") }))
	t.Cleanup(app.Close)
	svcAddr, ngxAddr := FreeAddr(t), FreeAddr(t)
	block := strings.ReplaceAll(string(shipped), readmeService, svcAddr)
	block = strings.ReplaceAll(block, readmeApp, app.Listener.Addr().String())
	bin := proxytest.BuildService(t, root)
	ngx := Start(t, ngxAddr, block)
	rdb := redistest.StartServer(t)
	secret := proxytest.Secret(t)
	proxytest.StartService(t, bin, svcAddr, map[string]string{
		"REDIS_URL": rdb.URL(), "IMPERSONATOR_LISTEN": svcAddr, "IMPERSONATOR_PUBLIC_URL": ngx.URL,
		"IMPERSONATOR_APP_URL": ngx.URL, "IMPERSONATOR_KEYS_DIR": keysFor(t, bin), "FOREST_AUTH_SECRET": secret,
		"IMPERSONATOR_DELIVERY": "redirect", "IMPERSONATOR_LOG_LEVEL": "warn", "IMPERSONATOR_LOGIN_RATE": "0",
		"IMPERSONATOR_ADMIN_TOKENS": proxytest.AdminToken,
	})
	svc := "http://" + svcAddr
	full := proxytest.Login(t, ngx.URL, proxytest.Mint(t, svc, secret, ""))
	ro := proxytest.Login(t, ngx.URL, proxytest.Mint(t, svc, secret, "Read only"))

	send := func(method, path string, c *http.Cookie) int {
		t.Helper()
		req, _ := http.NewRequest(method, ngx.URL+path, nil)
		if c != nil {
			req.AddCookie(c)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, x := range []struct {
		method, path string
		c            *http.Cookie
		want         int
	}{
		{"GET", "/account?tab=billing&q=secret", full, 200},
		{"POST", "/orders", full, 200},
		{"GET", "/not-impersonating", nil, 200},
		{"GET", "/impersonation/banner.js", full, 200}, // the service's own route: no forward-auth
		{"GET", "/account", ro, 200},
		{"DELETE", "/account", ro, 403},
	} {
		if got := send(x.method, x.path, x.c); got != x.want {
			t.Fatalf("%s %s: %d, want %d\n%s", x.method, x.path, got, x.want, ngx.ErrorLogText())
		}
	}

	type line struct{ Method, Path, Decision string }
	trail := func(p session.ActivityPage) []line {
		var out []line
		for _, e := range p.Entries {
			out = append(out, line{e.Method, e.Path, e.Decision})
		}
		return out
	}
	for _, x := range []struct {
		c    *http.Cookie
		want []line
	}{
		{full, []line{{"GET", "/account", "allow"}, {"POST", "/orders", "allow"}}},
		{ro, []line{{"GET", "/account", "allow"}, {"DELETE", "/account", "deny"}}},
	} {
		sid := sessionID(t, svc, x.c)
		page := activityOf(t, svc, sid, int64(len(x.want)))
		if got := trail(page); fmt.Sprint(got) != fmt.Sprint(x.want) || page.Requests != int64(len(x.want)) {
			t.Errorf("API trail of %s: %d requests %v, want %v", sid, page.Requests, got, x.want)
		}
		cmd := exec.Command(bin, "sessions", "show", sid)
		cmd.Env = append(os.Environ(), "REDIS_URL="+rdb.URL())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sessions show: %v\n%s", err, out)
		}
		text := string(out)
		if !strings.HasPrefix(text, fmt.Sprintf("session %s: %d request(s)\n", sid, len(x.want))) {
			t.Errorf("sessions show:\n%s", text)
		}
		for _, l := range x.want {
			if !strings.Contains(text, l.Method) || !strings.Contains(text, l.Path) || !strings.Contains(text, l.Decision) {
				t.Errorf("sessions show lacks %v:\n%s", l, text)
			}
		}
		if strings.Contains(text, "secret") || strings.Contains(text, "banner.js") || strings.Contains(text, "not-impersonating") {
			t.Errorf("sessions show holds what the trail must not:\n%s", text)
		}
	}
}

// TestActivityCrashLoss: the recorder writes every
// session.DefaultFlushInterval, off the request path. A real `impersonator
// serve` killed with SIGKILL while a session's requests are being
// recorded loses only the requests of its last flush interval (and of a
// flush in flight): every request answered before that window is in Redis.
func TestActivityCrashLoss(t *testing.T) {
	root := proxytest.ModuleRoot(t)
	bin := proxytest.BuildService(t, root)
	rdb := redistest.StartServer(t)
	addr := FreeAddr(t)
	secret := proxytest.Secret(t)
	svc := proxytest.StartService(t, bin, addr, map[string]string{
		"REDIS_URL": rdb.URL(), "IMPERSONATOR_LISTEN": addr, "IMPERSONATOR_PUBLIC_URL": "http://" + addr,
		"IMPERSONATOR_KEYS_DIR": keysFor(t, bin), "FOREST_AUTH_SECRET": secret, "IMPERSONATOR_DELIVERY": "redirect",
		"IMPERSONATOR_LOG_LEVEL": "warn", "IMPERSONATOR_LOGIN_RATE": "0", "IMPERSONATOR_ADMIN_TOKENS": proxytest.AdminToken,
	})
	base := "http://" + addr
	c := proxytest.Login(t, base, proxytest.Mint(t, base, secret, ""))
	sid := sessionID(t, base, c)

	// Forward-auth checks, one after another, for 1.5 s; each one's answer
	// time is kept. Then SIGKILL at once.
	client := &http.Client{Timeout: 5 * time.Second}
	var answered []time.Time
	start := time.Now()
	for time.Since(start) < 1500*time.Millisecond {
		req, _ := http.NewRequest(http.MethodGet, base+"/impersonation/session", nil)
		req.AddCookie(c)
		req.Header.Set("X-Forwarded-Method", "GET")
		req.Header.Set("X-Forwarded-Uri", fmt.Sprint("/p/", len(answered)))
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("check %d: %d", len(answered), res.StatusCode)
		}
		answered = append(answered, time.Now())
	}
	svc.Stop() // SIGKILL: no final flush
	killed := time.Now()

	st, err := store.Open(rdb.URL(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	entries, kept, err := st.Activity(context.Background(), sid)
	if err != nil {
		t.Fatal(err)
	}
	sent := int64(len(answered))
	// Flushes write in order, so what survived is the first kept requests.
	if kept > sent || kept == 0 {
		t.Fatalf("kept %d of %d requests", kept, sent)
	}
	for i, e := range entries {
		if e.Path != fmt.Sprint("/p/", i) {
			t.Fatalf("entry %d is %s: the kept requests are not the first ones", i, e.Path)
		}
	}
	lost := sent - kept
	window := time.Duration(0)
	if lost > 0 {
		window = killed.Sub(answered[kept]) // the oldest lost request's answer, to the kill
	}
	t.Logf("sent %d checks in %s; %d survived the SIGKILL, %d lost, answered in the last %s before it",
		sent, answered[len(answered)-1].Sub(start).Round(time.Millisecond), kept, lost, window.Round(time.Millisecond))
	// The stated bound: one flush interval, plus the flush in flight;
	// slack for a loaded machine (2 shared cores).
	if bound := 2*session.DefaultFlushInterval + 150*time.Millisecond; window > bound {
		t.Errorf("lost requests answered up to %s before the kill, more than %s", window, bound)
	}
}
