package browsertest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/impersonator/impersonator/internal/browsertest"
)

// TestBrowserRendersAPage proves the harness: Chromium starts, loads a
// loopback page and runs its script.
func TestBrowserRendersAPage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><p id="out">static</p><script>document.getElementById("out").textContent = "scripted"</script>`)
	}))
	defer srv.Close()
	ctx := browsertest.New(t)
	browsertest.Do(t, ctx, 30*time.Second, chromedp.Navigate(srv.URL))
	text := browsertest.Get(t, ctx, 30*time.Second, chromedp.Text("#out"))
	if text != "scripted" {
		t.Errorf("page text = %q, want %q", text, "scripted")
	}
}

// TestThirdPartyCookieSetting proves the profile preference takes effect: a
// page on 127.0.0.1 fetches, with credentials, a URL of another site
// (localhost) that sets a SameSite=None cookie; the browser keeps it only
// when third-party cookies are allowed.
func TestThirdPartyCookieSetting(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		http.SetCookie(w, &http.Cookie{Name: "control", Value: "1", Path: "/", Secure: true, SameSite: http.SameSiteNoneMode})
		fmt.Fprint(w, "set")
	}))
	defer other.Close()
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><script>
window.result = "pending";
fetch(%q, {credentials: "include"}).then(r => r.text()).then(t => { window.result = t; }, e => { window.result = "error " + e; });
</script>`, otherURL+"/set")
	}))
	defer page.Close()
	yes, no := true, false
	for _, c := range []struct {
		name    string
		setting browsertest.ThirdPartyCookies
		kept    *bool // nil: only reported
	}{{"allowed", browsertest.AllowThirdParty, &yes}, {"blocked", browsertest.BlockThirdParty, &no}, {"default", browsertest.DefaultCookies, nil}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := browsertest.NewWith(t, browsertest.Options{Cookies: c.setting})
			browsertest.Do(t, ctx, 30*time.Second, chromedp.Navigate(page.URL))
			if got := browsertest.Get(t, ctx, 20*time.Second, chromedp.Poll[string](`window.result !== "pending" && window.result`,
				chromedp.WithPollingTimeout(15*time.Second))); got != "set" {
				t.Fatalf("fetch = %q", got)
			}
			cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{otherURL}})
			if err != nil {
				t.Fatal(err)
			}
			kept := len(cookies.Cookies) == 1
			switch {
			case c.kept == nil:
				// Chromium's own default changes between versions and
				// builds (Debian's 156 headless blocks): reported, not pinned.
				t.Logf("this Chromium's default profile keeps third-party cookies: %v", kept)
			case kept != *c.kept:
				t.Errorf("third-party cookie kept = %v, want %v", kept, *c.kept)
			}
		})
	}
}
