package browsertest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

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
