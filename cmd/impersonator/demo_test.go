package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/impersonator/impersonator/internal/browsertest"
)

// startDemo runs `impersonator demo` on :0 ports and returns the panel's
// and the app's URLs (learnt from its listening callback) and its output.
func startDemo(t *testing.T, args ...string) (panelURL, appURL string, out *syncBuffer) {
	t.Helper()
	out = &syncBuffer{}
	addrs := make(chan [2]string, 2)
	ctx, cancel := context.WithCancel(withListening(context.Background(), func(name, addr string) { addrs <- [2]string{name, addr} }))
	done := make(chan error, 1)
	args = append([]string{"demo", "--panel-listen", "127.0.0.1:0", "--app-listen", "127.0.0.1:0"}, args...)
	go func() { done <- run(ctx, args, env(nil), out, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("demo returned %v after interruption", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("demo did not stop within 15s of its interruption")
		}
	})
	for panelURL == "" || appURL == "" {
		select {
		case a := <-addrs:
			_, p, _ := strings.Cut(a[1], ":")
			if a[0] == "panel" {
				panelURL = "http://127.0.0.1:" + p
			} else {
				appURL = "http://localhost:" + p
			}
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("demo exited early: %v\n%s", err, out.String())
		case <-time.After(20 * time.Second):
			t.Fatalf("demo did not listen:\n%s", out.String())
		}
	}
	return panelURL, appURL, out
}

const demoBanner = `(() => { const h = document.querySelector('[data-impersonator-banner]'); return h ? h.shadowRoot.querySelector('span').textContent : ""; })()`

// TestDemoInChromium clicks through `impersonator demo` in a headless
// Chromium with its default profile (this one blocks third-party cookies,
// which auto delivery, the demo's, survives): Impersonate on the panel,
// land on the customer app, see the banner. It writes the two screenshots
// into $IMPERSONATOR_SCREENSHOTS when set (`make screenshots` sets it to
// docs/img), else into a temporary folder.
func TestDemoInChromium(t *testing.T) {
	panelURL, appURL, out := startDemo(t)
	if !strings.Contains(out.String(), "open "+panelURL+"/ and click Impersonate") {
		t.Errorf("demo output lacks the URL to open:\n%s", out.String())
	}
	shots := os.Getenv("IMPERSONATOR_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	ctx := browsertest.NewWith(t, browsertest.Options{Width: 1000, Height: 720})
	// window.hold keeps the panel on screen after the action's answer, for
	// its screenshot, until the test lets it open redirectTo.
	browsertest.Do(t, ctx, 20*time.Second, chromedp.Navigate(panelURL+"/"),
		chromedp.Evaluate[chromedp.Void](`window.hold = true`),
		chromedp.Click(chromedp.CSS(`button[data-id="42"]`)))
	browsertest.WaitTrue(t, ctx, 15*time.Second, `window.panel.state === "redirecting"`)
	toast := browsertest.Get(t, ctx, 5*time.Second, chromedp.Evaluate[string](`document.getElementById("toast").textContent`))
	if toast != "Impersonating users 42" {
		t.Errorf("panel toast = %q, want the action's success", toast)
	}
	writeShot(t, ctx, filepath.Join(shots, "demo-panel.png"))
	browsertest.Do(t, ctx, 5*time.Second, chromedp.Evaluate[chromedp.Void](`window.hold = false`))

	browsertest.WaitTrue(t, ctx, 20*time.Second, `location.href === "`+appURL+`/" && document.readyState === "complete" && !!document.getElementById("who")`)
	who := browsertest.Get(t, ctx, 5*time.Second, chromedp.Evaluate[string](`document.getElementById("who").textContent`))
	if who != "Signed in as Grace Hopper (customer 42), impersonated by ada@example.com." {
		t.Errorf("app says %q", who)
	}
	banner := browsertest.Get(t, ctx, 20*time.Second, chromedp.Poll[string](demoBanner+` || false`, chromedp.WithPollingTimeout(15*time.Second)))
	if !strings.HasPrefix(banner, "You are viewing as Grace Hopper (42), impersonated by ada@example.com · ends in 29:") {
		t.Errorf("banner = %q", banner)
	}
	writeShot(t, ctx, filepath.Join(shots, "demo-app.png"))

	// The demo's output: the access log (no token in it) and the audit log.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "audit impersonation.redeemed") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	log := out.String()
	for _, want := range []string{"audit impersonation.minted ada@example.com users:42", "audit impersonation.redeemed ada@example.com users:42",
		"app GET " + appURL + "/impersonation/start 200", "app POST " + appURL + "/impersonation/login 303"} {
		if !strings.Contains(log, want) {
			t.Errorf("demo output lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "token=") || strings.Contains(log, "eyJ") {
		t.Errorf("demo output shows a token:\n%s", log)
	}
}

func writeShot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	png := browsertest.Get(t, ctx, 10*time.Second, chromedp.CaptureScreenshot())
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDemoRefusesNonLoopback: the demo's development secrets stay on this
// machine.
func TestDemoRefusesNonLoopback(t *testing.T) {
	err := run(context.Background(), []string{"demo", "--panel-listen", "0.0.0.0:0"}, env(nil), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("demo on 0.0.0.0 = %v, want a refusal naming loopback", err)
	}
}
