// Package browsertest runs a real headless Chromium for tests that prove
// browser behaviour (CORS, cookies, redirects) rather than assert headers.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// binary finds Chromium: $CHROMIUM, then PATH, then Debian's path.
func binary(tb testing.TB) string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	tb.Fatal("chromium not found: install it (apt-get install -y chromium) or set CHROMIUM; `make test` and .ci/run do this for you")
	return ""
}

// New starts a headless Chromium with a fresh profile and returns a browser
// context (one tab) that the test drives with chromedp.Run. The browser is
// closed when the test ends. A missing Chromium fails the test.
func New(tb testing.TB) context.Context {
	tb.Helper()
	opts := append([]chromedp.ExecAllocatorOption{},
		chromedp.ExecPath(binary(tb)),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.DisableGPU,
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Features that reach out to Google's services, which this
		// machine's closed network refuses: off, so the log stays clean.
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	// Start the browser now, so a failure to launch fails here, clearly.
	// (The first call's context owns the browser: no timeout on it.)
	if err := chromedp.Do(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		tb.Fatalf("start chromium: %v", err)
	}
	tb.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// Do runs steps in the browser with a timeout, failing the test on error.
func Do(tb testing.TB, ctx context.Context, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(rctx, steps...); err != nil {
		tb.Fatalf("browser: %v", err)
	}
}

// Get runs one action that returns a value, with a timeout, failing the test
// on error.
func Get[T any](tb testing.TB, ctx context.Context, timeout time.Duration, a chromedp.Action[T]) T {
	tb.Helper()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(rctx, a)
	if err != nil {
		tb.Fatalf("browser: %v", err)
	}
	return v
}
