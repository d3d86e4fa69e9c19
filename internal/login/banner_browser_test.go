package login_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/impersonator/impersonator/internal/browsertest"
	"github.com/impersonator/impersonator/internal/redistest"
)

// evilName is the display name the app passes to the banner: markup and
// quotes that must show as text, and a right-to-left override that must
// not turn the rest of the banner around.
const evilName = "<img src=x onerror=\"window.pwned=1\">Grace \"Hopper\" & co\u202e"

// TestBannerInChromium: the banner, on an app page under a strict
// Content-Security-Policy, pushes the app's nav down instead of covering it
// (bounding rectangles, and what the browser finds at the nav's and its
// Log out button's centres), offsets the app's fixed bar through
// --impersonator-banner-height, shows the display name the app passes as
// text (no element made of it, no script run); when the session is
// revoked it clears the cookie and reloads, and the banner goes; while the
// service cannot be reached it stays and says so.
func TestBannerInChromium(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	svcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svcURL := "http://" + svcLn.Addr().String()
	var page string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src "+svcURL+"; connect-src "+svcURL+"; style-src 'sha256-"+styleHash+"'")
		fmt.Fprint(w, page)
	}))
	t.Cleanup(app.Close)
	w := newWorld(t, url, map[string]string{"IMPERSONATOR_PUBLIC_URL": svcURL, "IMPERSONATOR_APP_URL": app.URL, "IMPERSONATOR_DELIVERY": "redirect"})
	w.now = time.Now() // the browser's clock is real
	var down atomic.Bool
	instance := w.instance()
	svc := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if down.Load() { // unreachable: the connection is dropped
			if c, _, err := rw.(http.Hijacker).Hijack(); err == nil {
				c.Close()
			}
			return
		}
		instance.ServeHTTP(rw, r)
	}))
	svc.Listener.Close()
	svc.Listener = svcLn
	svc.Start()
	t.Cleanup(svc.Close)
	page = `<!doctype html><html><head><meta charset="utf-8"><title>app</title>` + appStyle +
		`<script src="` + svcURL + `/impersonation/banner.js" data-name="` + html.EscapeString(evilName) + `" defer></script></head>` +
		`<body><nav id="nav">Customer app <button id="logout" type="button">Log out</button></nav>` +
		`<div id="fixedbar">fixed</div><p id="app">customer app</p></body></html>`

	ctx := browsertest.New(t)
	signIn := func() {
		raw, _ := w.mint()
		browsertest.Do(t, ctx, 30*time.Second, chromedp.Navigate(svcURL+"/impersonation/start#token="+raw))
		browsertest.WaitTrue(t, ctx, 20*time.Second, `location.href.startsWith(`+jsString(app.URL)+`) && !!document.getElementById("app")`)
	}
	bannerSays := func(prefix string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		var got string
		for time.Now().Before(deadline) {
			ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
			text, err := chromedp.Run(ectx, chromedp.Evaluate[string](bannerText))
			if err == nil {
				got = text
			}
			cancel()
			if err == nil && strings.HasPrefix(got, prefix) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("banner = %q, want it to start with %q", got, prefix)
	}
	signIn()
	wantName := "You are viewing as <img src=x onerror=\"window.pwned=1\">Grace \"Hopper\" & co (42), impersonated by ada@example.com · ends in 29:"
	bannerSays(wantName)

	t.Run("the name is text", func(t *testing.T) {
		got := browsertest.Get(t, ctx, 5*time.Second, chromedp.Evaluate[string](`(() => {
			const root = document.querySelector('[data-impersonator-banner]').shadowRoot;
			return [document.querySelectorAll('img').length, root.querySelectorAll('img').length, String(window.pwned),
			        root.querySelector('bdi').textContent.endsWith('\"Hopper\" & co (42)') && !root.textContent.includes('\u202e')].join(' ');
		})()`))
		if got != "0 0 undefined true" {
			t.Errorf("images in the page, in the banner, window.pwned, bdi text = %q, want \"0 0 undefined true\"", got)
		}
	})

	t.Run("the app's nav is pushed down, not covered", func(t *testing.T) {
		got := browsertest.Get(t, ctx, 5*time.Second, chromedp.Evaluate[map[string]float64](`(() => {
			const host = document.querySelector('[data-impersonator-banner]');
			const b = host.getBoundingClientRect(), n = document.getElementById('nav').getBoundingClientRect();
			const btn = document.getElementById('logout').getBoundingClientRect();
			const f = document.getElementById('fixedbar').getBoundingClientRect();
			const at = (r) => document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
			return {bannerTop: b.top, bannerBottom: b.bottom, navTop: n.top, navHeight: n.height, fixedTop: f.top,
			        navHit: document.getElementById('nav').contains(at(n)) ? 1 : 0, buttonHit: at(btn) === document.getElementById('logout') ? 1 : 0,
			        fixedHit: at(f) === document.getElementById('fixedbar') ? 1 : 0,
			        varHeight: parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--impersonator-banner-height'))};
		})()`))
		if got["bannerTop"] != 0 || got["bannerBottom"] < 20 {
			t.Errorf("banner at %v–%v, want at the top, at least 20px high", got["bannerTop"], got["bannerBottom"])
		}
		if got["navTop"] < got["bannerBottom"] || got["navHeight"] <= 0 {
			t.Errorf("nav at %v, banner ends at %v: the banner covers the nav", got["navTop"], got["bannerBottom"])
		}
		if got["navHit"] != 1 || got["buttonHit"] != 1 {
			t.Errorf("at the nav's centre the browser finds the nav: %v; at its Log out button's: %v; want both", got["navHit"], got["buttonHit"])
		}
		if got["varHeight"] != got["bannerBottom"] || got["fixedTop"] != got["bannerBottom"] || got["fixedHit"] != 1 {
			t.Errorf("--impersonator-banner-height %v, the app's fixed bar at %v (hit %v), banner ends at %v", got["varHeight"], got["fixedTop"], got["fixedHit"], got["bannerBottom"])
		}
	})

	t.Run("revoked: the cookie is cleared and the banner goes with a reload", func(t *testing.T) {
		c := browserCookie(t, ctx, svcURL)
		if rec := do(instance, http.MethodDelete, "/v1/sessions/"+sessionID(t, instance, c), nil, adminToken); rec.Code != 204 {
			t.Fatalf("revoke: %d", rec.Code)
		}
		start := time.Now()
		// The banner asks again every 5s; the app still names a customer
		// (data-name), so after the reload the banner says the session ended.
		bannerSays("You are viewing as <img src=x onerror=\"window.pwned=1\">Grace \"Hopper\" & co · the impersonation session has ended")
		took := time.Since(start)
		t.Logf("banner changed %s after the revocation", took.Round(time.Millisecond))
		if took > 8*time.Second { // one 5 s check, the reload, CPU contention's margin
			t.Errorf("the banner changed %s after the revocation, want at its next check (5 s)", took)
		}
		if typ := browsertest.Get(t, ctx, 5*time.Second, chromedp.Evaluate[string](`performance.getEntriesByType("navigation")[0].type`)); typ != "reload" {
			t.Errorf("navigation type %q, want reload", typ)
		}
		cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{svcURL, app.URL}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cookies.Cookies {
			if c.Name == "impersonation_session" {
				t.Errorf("the browser still holds the session cookie after the 401")
			}
		}
	})

	t.Run("unreachable: the banner stays and says so", func(t *testing.T) {
		signIn()
		bannerSays(wantName)
		down.Store(true)
		defer down.Store(false)
		bannerSays("You are viewing as <img src=x onerror=\"window.pwned=1\">Grace \"Hopper\" & co (42) · impersonation status unknown: impersonator cannot be reached")
	})
}

// appStyle is the app's one stylesheet (allowed by its hash): a nav in the
// flow at the top and a fixed bar that follows the banner's height.
const appStyle = `<style>body{margin:0;font:14px/1.5 sans-serif}nav{display:flex;justify-content:space-between;padding:8px 12px;background:#0b6e4f;color:#fff}#fixedbar{position:fixed;right:0;top:var(--impersonator-banner-height,0);background:#ffe}</style>`

var styleHash = func() string {
	sum := sha256.Sum256([]byte(strings.TrimSuffix(strings.TrimPrefix(appStyle, "<style>"), "</style>")))
	return base64.StdEncoding.EncodeToString(sum[:])
}()

// browserCookie is the browser's session cookie for u.
func browserCookie(t *testing.T, ctx context.Context, u string) *http.Cookie {
	t.Helper()
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{u}})
	if err != nil {
		t.Fatal(err)
	}
	c := cookieIn(t, cookies.Cookies, "impersonation_session")
	return &http.Cookie{Name: c.Name, Value: c.Value}
}
