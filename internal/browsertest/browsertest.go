// Package browsertest runs a real headless Chromium for tests that prove
// browser behaviour (CORS, cookies, redirects) rather than assert headers.
package browsertest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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

// ThirdPartyCookies is the profile's third-party cookie setting, the one a
// user changes in chrome://settings/cookies (preference
// profile.cookie_controls_mode).
type ThirdPartyCookies int

const (
	// DefaultCookies leaves the profile as Chromium creates it.
	DefaultCookies ThirdPartyCookies = iota
	// AllowThirdParty writes cookie_controls_mode 0: third-party cookies
	// allowed.
	AllowThirdParty
	// BlockThirdParty writes cookie_controls_mode 1: third-party cookies
	// blocked.
	BlockThirdParty
)

// Options change the browser New starts.
type Options struct {
	// Cookies, when set, is written into the fresh profile's
	// Default/Preferences before Chromium starts.
	Cookies ThirdPartyCookies
	// IgnoreCertErrors accepts any TLS certificate (tests serve HTTPS
	// with certificates of their own CA).
	IgnoreCertErrors bool
	// Width and Height set the window size (screenshots); 0 keeps
	// Chromium's default.
	Width, Height int
	// UserDataDir is the profile folder; a fresh temporary one when empty.
	UserDataDir string
}

// New starts a headless Chromium with a fresh profile and returns a browser
// context (one tab) that the test drives with chromedp.Run. The browser is
// closed when the test ends. A missing Chromium fails the test.
func New(tb testing.TB) context.Context {
	tb.Helper()
	return NewWith(tb, Options{})
}

// NewWith is New with options.
func NewWith(tb testing.TB, o Options) context.Context {
	tb.Helper()
	if testing.Short() {
		tb.Skip("-short: needs chromium")
	}
	dir := o.UserDataDir
	if dir == "" {
		dir = tb.TempDir()
	}
	if err := writePreferences(dir, o.Cookies); err != nil {
		tb.Fatalf("browser profile: %v", err)
	}
	opts := append([]chromedp.ExecAllocatorOption{},
		chromedp.ExecPath(binary(tb)),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.DisableGPU,
		chromedp.UserDataDir(dir),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Features that reach out to Google's services, which this
		// machine's closed network refuses: off, so the log stays clean.
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
	)
	if o.IgnoreCertErrors {
		opts = append(opts, chromedp.IgnoreCertErrors)
	}
	if o.Width > 0 && o.Height > 0 {
		opts = append(opts, chromedp.WindowSize(o.Width, o.Height))
	}
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

// writePreferences writes the profile's Default/Preferences for c, as
// Chromium would after the user chose the setting.
func writePreferences(dir string, c ThirdPartyCookies) error {
	if c == DefaultCookies {
		return nil
	}
	mode := 0
	if c == BlockThirdParty {
		mode = 1
	}
	prefs, err := json.Marshal(map[string]any{"profile": map[string]any{"cookie_controls_mode": mode}})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "Default"), 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "Default", "Preferences"), prefs, 0o600)
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

// WaitTrue evaluates the JavaScript expression expr until it is true, across
// page loads (during which evaluation fails), for at most timeout.
func WaitTrue(tb testing.TB, ctx context.Context, timeout time.Duration, expr string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("timed out after %s waiting for %s", timeout, expr)
}

// Close closes the browser of ctx gracefully, waiting (at most 15s) for it
// to exit, so that what it keeps on disk (history, cookies) is written to
// its profile folder. The context is unusable afterwards.
func Close(tb testing.TB, ctx context.Context) {
	tb.Helper()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Cancel(cctx); err != nil {
		tb.Fatalf("close chromium: %v", err)
	}
}
