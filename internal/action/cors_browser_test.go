package action_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/browsertest"
	"github.com/impersonator/impersonator/internal/redistest"
)

// adminPage is a stand-in for the Forest UI: it calls the action the way
// the UI does (cross-origin, credentials included, bearer JWT, JSON) and
// records what its script could read of the answer.
func adminPage(actionURL, bearer, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><title>admin</title><script>
window.result = "pending";
fetch(%q, {method: "POST", credentials: "include", headers: {"Authorization": "Bearer %s", "Content-Type": "application/json"}, body: %q})
  .then(r => r.json().then(j => { window.result = r.status + " " + (j.success || JSON.stringify(j)); }))
  .catch(e => { window.result = "blocked: " + e.name; });
</script>`, actionURL, bearer, body)
	})
}

// TestCORSInChromium: a page from an allowed origin calls the action with
// credentials and reads the answer; a page from a foreign origin cannot, and
// its request never reaches the mint (the preflight is refused).
func TestCORSInChromium(t *testing.T) {
	allowedPage := httptest.NewServer(nil)
	defer allowedPage.Close()
	foreignPage := httptest.NewServer(nil)
	defer foreignPage.Close()
	// Same host, other ports: distinct origins, as in production.
	_, url := redistest.EmbeddedURL(t)
	f := newFixture(t, url, map[string]string{"IMPERSONATOR_ALLOWED_ORIGINS": allowedPage.URL + ",https://*.forestadmin.com"}, nil)
	service := httptest.NewServer(f.h)
	defer service.Close()

	bearer := forestJWT(t, authSecret, nodeAdmin())
	body := readTestdata(t, "requests/legacy-users-42.json")
	page := adminPage(service.URL+legacyPath, bearer, strings.TrimSpace(body))
	allowedPage.Config.Handler = page
	foreignPage.Config.Handler = page
	foreignURL := strings.Replace(foreignPage.URL, "127.0.0.1", "localhost", 1)

	ctx := browsertest.New(t)
	read := func(pageURL string) string {
		browsertest.Do(t, ctx, 30*time.Second, chromedp.Navigate(pageURL))
		return browsertest.Get(t, ctx, 30*time.Second,
			chromedp.Poll[string](`window.result !== "pending" && window.result`, chromedp.WithPollingTimeout(20*time.Second)))
	}
	if got := read(allowedPage.URL); got != "200 Impersonating users 42" {
		t.Errorf("allowed origin read %q, want the action's answer", got)
	}
	if got := read(foreignURL); !strings.HasPrefix(got, "blocked") {
		t.Errorf("foreign origin read %q, want the browser to block it", got)
	}
	var minted int
	for _, e := range f.events(t) {
		if e.Type == audit.Minted {
			minted++
		}
	}
	if minted != 1 {
		t.Errorf("%d tokens minted, want 1: the foreign origin's request must not reach the mint", minted)
	}
}
