package login_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/impersonator/impersonator/internal/browsertest"
	"github.com/impersonator/impersonator/internal/redistest"
)

// browserWorld runs the service and a customer app on loopback servers, so
// a real Chromium drives the flows end to end.
type browserWorld struct {
	*world
	service, app *httptest.Server
}

func newBrowserWorld(t *testing.T, env map[string]string, appPage string) *browserWorld {
	t.Helper()
	svcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, appPage)
	}))
	t.Cleanup(app.Close)
	vars := map[string]string{"IMPERSONATOR_PUBLIC_URL": "http://" + svcLn.Addr().String(), "IMPERSONATOR_APP_URL": app.URL}
	for k, v := range env {
		vars[k] = v
	}
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, vars)
	w.now = time.Now() // the browser's clock is real: tokens must be valid now
	svc := httptest.NewUnstartedServer(w.instance())
	svc.Listener.Close()
	svc.Listener = svcLn
	svc.Start()
	t.Cleanup(svc.Close)
	return &browserWorld{world: w, service: svc, app: app}
}

func cookieIn(t *testing.T, cookies []*network.Cookie, name string) *network.Cookie {
	t.Helper()
	for _, c := range cookies {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no cookie %s in the browser (has %d cookies)", name, len(cookies))
	return nil
}

const bannerText = `(() => { const h = document.querySelector('[data-impersonator-banner]'); return h ? h.shadowRoot.querySelector('span').textContent : ""; })()`

// TestRedirectFlowInChromium: the start page takes the token from the
// fragment, removes it from the address bar and history, posts it; the
// browser lands on the app with a first-party Lax cookie, and the banner on
// the app's page shows the session and ends it.
func TestRedirectFlowInChromium(t *testing.T) {
	var bw *browserWorld
	page := `<!doctype html><title>app</title><p id="app">customer app</p>`
	bw = newBrowserWorld(t, map[string]string{"IMPERSONATOR_DELIVERY": "redirect"}, "")
	bw.app.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page+`<script src="`+bw.service.URL+`/impersonation/banner.js" defer></script>`)
	})
	raw, _ := bw.mint()
	ctx := browsertest.New(t)
	browsertest.Do(t, ctx, 30*time.Second, chromedp.Navigate(bw.service.URL+"/impersonation/start#token="+raw))
	loc := browsertest.Get(t, ctx, 30*time.Second, chromedp.Poll[string](
		`location.href.startsWith(`+jsString(bw.app.URL)+`) && document.getElementById("app") && location.href`,
		chromedp.WithPollingTimeout(20*time.Second)))
	if strings.Contains(loc, "token") {
		t.Errorf("landed on %q: the token is still in the URL", loc)
	}
	hist := browsertest.Get(t, ctx, 10*time.Second, chromedp.NavigationEntries())
	for _, e := range hist.Entries {
		if strings.Contains(e.URL, raw[:20]) || strings.Contains(e.URL, "token=") {
			t.Errorf("history entry %q holds the token", e.URL)
		}
	}
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{bw.service.URL}})
	if err != nil {
		t.Fatal(err)
	}
	c := cookieIn(t, cookies.Cookies, "impersonation_session")
	if !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax || c.Path != "/" || c.Secure {
		t.Errorf("cookie HttpOnly=%v SameSite=%v Path=%q Secure=%v, want HttpOnly, Lax, /, not Secure (http)", c.HTTPOnly, c.SameSite, c.Path, c.Secure)
	}
	if js := browsertest.Get(t, ctx, 10*time.Second, chromedp.Evaluate[string](`document.cookie`)); strings.Contains(js, "impersonation_session") {
		t.Error("page script can read the session cookie")
	}
	text := browsertest.Get(t, ctx, 20*time.Second, chromedp.Poll[string](bannerText+` || false`, chromedp.WithPollingTimeout(15*time.Second)))
	if !strings.HasPrefix(text, "You are viewing as 42, impersonated by ada@example.com · ends in 29:") {
		t.Errorf("banner = %q", text)
	}
	// End: the banner's button logs out; after the reload there is no banner.
	browsertest.Do(t, ctx, 10*time.Second, chromedp.Evaluate[chromedp.Void](
		`setTimeout(() => document.querySelector('[data-impersonator-banner]').shadowRoot.querySelector('button').click(), 0)`))
	waitTrue(t, ctx, `document.readyState === "complete" && !document.querySelector('[data-impersonator-banner]') && performance.getEntriesByType("navigation")[0].type === "reload"`)
	if rec := get(bw.instance(), "/impersonation/session", &http.Cookie{Name: "impersonation_session", Value: c.Value}); rec.Code != 401 {
		t.Errorf("session after End: %d, want 401", rec.Code)
	}
}

// TestWebhookCookieInChromium: the admin panel's page (another origin)
// posts the token with credentials, CORS lets it read the answer, and the
// browser keeps a SameSite=None; Secure cookie for the service, even on
// http://127.0.0.1 in development. The admin page is same-site here
// (127.0.0.1, another port), as a self-hosted panel on admin.example.com is
// for app.example.com. From another site the cookie is a third-party cookie,
// which this Chromium blocks by default: that case is what redirect
// delivery is for (README, "Login and sessions").
func TestWebhookCookieInChromium(t *testing.T) {
	admin := httptest.NewServer(nil)
	defer admin.Close()
	adminOrigin := admin.URL
	bw := newBrowserWorld(t, map[string]string{"IMPERSONATOR_ALLOWED_ORIGINS": adminOrigin}, "<p>app</p>")
	raw, _ := bw.mint()
	admin.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><script>
window.result = "pending";
fetch(%q, {method: "POST", credentials: "include", headers: {"Content-Type": "application/json"}, body: JSON.stringify({token: %q})})
  .then(r => r.json()).then(j => { window.result = j.subject ? "subject " + j.subject : JSON.stringify(j); })
  .catch(e => { window.result = "blocked: " + e; });
</script>`, bw.service.URL+"/impersonation/login", raw)
	})
	ctx := browsertest.New(t)
	browsertest.Do(t, ctx, 30*time.Second, chromedp.Navigate(adminOrigin))
	got := browsertest.Get(t, ctx, 30*time.Second, chromedp.Poll[string](`window.result !== "pending" && window.result`, chromedp.WithPollingTimeout(20*time.Second)))
	if got != "subject 42" {
		t.Fatalf("admin page read %q, want the login answer", got)
	}
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{bw.service.URL}})
	if err != nil {
		t.Fatal(err)
	}
	c := cookieIn(t, cookies.Cookies, "impersonation_session")
	if !c.HTTPOnly || c.SameSite != network.CookieSameSiteNone || !c.Secure || c.Path != "/" {
		t.Errorf("cookie HttpOnly=%v SameSite=%v Secure=%v Path=%q, want HttpOnly, None, Secure, /", c.HTTPOnly, c.SameSite, c.Secure, c.Path)
	}
}

// waitTrue evaluates expr until it is true, across page loads (during which
// evaluation fails), for at most 20s.
func waitTrue(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", expr)
}

func jsString(s string) string { return fmt.Sprintf("%q", s) }
