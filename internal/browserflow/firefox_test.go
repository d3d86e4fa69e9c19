package browserflow_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/browserflow"
	"github.com/impersonator/impersonator/internal/proxytest"
)

// TestDeliveryInFirefox runs the Chromium scenarios' flows in Firefox ESR,
// driven over WebDriver BiDi by puppeteer-core (browsertests/firefox), on
// the same two-site HTTPS deployment, under three settings of Firefox's
// network.cookie.cookieBehavior: 0 (third-party cookies allowed), 1
// (blocked) and 5 (Firefox's default, Total Cookie Protection: a
// third-party cookie is kept in a jar partitioned by the top-level site).
// Each setting is confirmed with the control cookie: from the panel's page
// it comes back (or not), and on the app's own page it is there (or not).
// The app's page carries a strict Content-Security-Policy, under which the
// banner must show.
func TestDeliveryInFirefox(t *testing.T) {
	ca := newCA(t)
	type scenario struct {
		name  string
		setup setup
		run   func(t *testing.T, p *ffPage, d *deployment)
	}
	for _, b := range []struct {
		name     string
		behavior int
		// what the control cookie does: from the panel's page, and on
		// the app's own page (top level).
		fromPanel, onApp string
		scenarios        []scenario
	}{
		{"third-party cookies allowed (cookieBehavior 0)", 0, "kept", "kept", []scenario{
			{"auto: the webhook's session is kept, R is not needed", setup{delivery: "auto"}, ffAutoKept},
			{"policy refusal: Forest's error toast, nothing minted", setup{delivery: "auto", policy: "never:\n  users: [\"42\"]\n"}, ffRefusal},
		}},
		{"third-party cookies blocked (cookieBehavior 1)", 1, "dropped", "dropped", []scenario{
			{"auto: R opens the session, the webhook's is superseded", setup{delivery: "auto"}, ffAutoDropped},
			{"redirect: impersonating", setup{delivery: "redirect"}, ffRedirect},
		}},
		{"Firefox's default, Total Cookie Protection (cookieBehavior 5)", 5, "kept", "dropped", []scenario{
			{"auto: the webhook's cookie is partitioned away, R opens the session", setup{delivery: "auto"}, ffAutoDropped},
			{"webhook: not impersonating, the session is ended as never used", setup{delivery: "webhook"}, ffWebhookDropped},
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			ff := startFirefox(t, map[string]any{"network.cookie.cookieBehavior": b.behavior})
			for _, s := range b.scenarios {
				t.Run(s.name, func(t *testing.T) {
					d := newDeployment(t, ca, s.setup)
					ff.control(t, d, b.fromPanel, b.onApp)
					p := ff.page(t)
					defer p.close(t)
					s.run(t, p, d)
				})
			}
		})
	}
}

func ffAutoKept(t *testing.T, p *ffPage, d *deployment) {
	ffImpersonate(t, p, d)
	ffSeesImpersonation(t, p, d)
	wantLogins(t, d, "webhook 200", "start page 303")
	wantOneLive(t, d)
	wantEvent(t, d, audit.Redeemed, "webhook credential")
	wantEvent(t, d, audit.Rejected, "redirect credential not needed: the webhook's cookie was kept")
	wantNo(t, d, audit.Ended, "superseded")
	ffEndsWithButton(t, p, d)
	noCredentialsLogged(t, d, "webhook token W", "start-page token R", "session cookie")
}

func ffAutoDropped(t *testing.T, p *ffPage, d *deployment) {
	ffImpersonate(t, p, d)
	ffSeesImpersonation(t, p, d)
	wantLogins(t, d, "webhook 200", "start page 303")
	wantOneLive(t, d)
	wantEvent(t, d, audit.Redeemed, "webhook credential")
	wantEvent(t, d, audit.Ended, "superseded: the browser did not keep the webhook's cookie")
	wantEvent(t, d, audit.Redeemed, "redirect credential: the browser did not keep the webhook's cookie; its session was superseded")
	ffEndsWithButton(t, p, d)
	noCredentialsLogged(t, d, "webhook token W", "start-page token R", "session cookie")
}

func ffRedirect(t *testing.T, p *ffPage, d *deployment) {
	ffImpersonate(t, p, d)
	ffSeesImpersonation(t, p, d)
	wantLogins(t, d, "start page 303")
	wantOneLive(t, d)
	wantEvent(t, d, audit.Redeemed, "")
	ffEndsWithButton(t, p, d)
	noCredentialsLogged(t, d, "start-page token R", "session cookie")
}

func ffWebhookDropped(t *testing.T, p *ffPage, d *deployment) {
	ffImpersonate(t, p, d)
	if who := ffLandOnApp(t, p, d); who != "Not impersonating: nobody is signed in." {
		t.Errorf("app page says %q, want not impersonating", who)
	}
	wantLogins(t, d, "webhook 200")
	if p.eval(t, `!!document.querySelector('[data-impersonator-banner]')`) == "true" {
		t.Error("a banner shows without a session")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !hasEvent(d.events(), audit.Ended, "never used: the browser probably blocked the third-party cookie; use IMPERSONATOR_DELIVERY=auto or redirect") {
		if time.Now().After(deadline) {
			t.Fatalf("no \"never used\" end within 10s; events: %v", steps(d.events()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(d.liveSessions()); n != 0 {
		t.Errorf("%d live sessions after the sweep, want 0", n)
	}
	noCredentialsLogged(t, d, "webhook token W", "session cookie")
}

func ffRefusal(t *testing.T, p *ffPage, d *deployment) {
	p.open(t, d.panelURL+"/")
	p.eval(t, `document.querySelector('button[data-id="42"]').click()`)
	p.wait(t, `window.panel && window.panel.state === "refused"`, 15*time.Second)
	toast := p.eval(t, `document.getElementById("toast").className + ": " + document.getElementById("toast").textContent`)
	if toast != `"toast error: You are not allowed to impersonate this record."` {
		t.Errorf("panel toast = %s, want Forest's error toast with the answer's errors[0].detail", toast)
	}
	evs := d.events()
	if hasEvent(evs, audit.Minted, "") || !hasEvent(evs, audit.Denied, "rule never: users 42 is listed in never") {
		t.Errorf("events %v, want one impersonation.denied by rule never and nothing minted", steps(evs))
	}
	if n := len(d.liveSessions()); n != 0 {
		t.Errorf("%d live sessions, want 0", n)
	}
	if len(d.credentials()) != 0 {
		t.Errorf("impersonator handed out credentials: %v", d.credentials())
	}
	noCredentialsLogged(t, d)
}

// ffImpersonate opens the panel and clicks Impersonate on users 42.
func ffImpersonate(t *testing.T, p *ffPage, d *deployment) {
	t.Helper()
	p.open(t, d.panelURL+"/")
	p.eval(t, `setTimeout(() => document.querySelector('button[data-id="42"]').click(), 0)`)
}

// ffLandOnApp waits for the app's page and returns what it says of who is
// signed in.
func ffLandOnApp(t *testing.T, p *ffPage, d *deployment) string {
	t.Helper()
	p.wait(t, `location.href === `+jsString(d.appURL+"/")+` && document.readyState === "complete" && !!document.getElementById("who")`, 20*time.Second)
	var who string
	if err := json.Unmarshal([]byte(p.eval(t, `document.getElementById("who").textContent`)), &who); err != nil {
		t.Fatal(err)
	}
	return who
}

// ffSeesImpersonation: the app knows the customer and the admin, the
// banner shows them (under the app's CSP) above the app's header, not over
// it, and the address bar holds no token.
func ffSeesImpersonation(t *testing.T, p *ffPage, d *deployment) {
	t.Helper()
	if who := ffLandOnApp(t, p, d); who != "Signed in as Grace Hopper (customer 42), impersonated by ada@example.com." {
		t.Fatalf("app page says %q, want it signed in as customer 42 by ada", who)
	}
	text := p.wait(t, `(() => { const t = `+bannerText+`; return t.startsWith("You are viewing as Grace Hopper (42), impersonated by ada@example.com · ends in 29:") && t; })()`, 15*time.Second)
	t.Logf("banner: %s", text)
	if got := p.eval(t, `(() => { const b = document.querySelector('[data-impersonator-banner]').getBoundingClientRect();
		const h = document.querySelector('header').getBoundingClientRect();
		return b.top === 0 && b.height > 0 && h.top >= b.bottom && document.querySelector('header').contains(document.elementFromPoint(h.left + h.width / 2, h.top + h.height / 2)); })()`); got != "true" {
		t.Errorf("the banner covers the app's header")
	}
	if loc := p.eval(t, `location.href`); strings.Contains(loc, "token") {
		t.Errorf("the address bar holds a token: %s", loc)
	}
}

// ffEndsWithButton clicks the banner's End: the session ends, the page
// reloads without a banner, and no session is live.
func ffEndsWithButton(t *testing.T, p *ffPage, d *deployment) {
	t.Helper()
	p.eval(t, `setTimeout(() => document.querySelector('[data-impersonator-banner]').shadowRoot.querySelector('button').click(), 0)`)
	p.wait(t, `document.readyState === "complete" && performance.getEntriesByType("navigation")[0].type === "reload"`+
		` && !document.querySelector('[data-impersonator-banner]') && document.getElementById("who").dataset.subject === ""`, 15*time.Second)
	if n := len(d.liveSessions()); n != 0 {
		t.Errorf("%d live sessions after End, want 0", n)
	}
	if !hasEvent(d.events(), audit.Ended, "logout") {
		t.Errorf("no session.ended logout event after End: %v", steps(d.events()))
	}
}

// firefox is one Firefox ESR, driven by browsertests/firefox/driver.mjs.
type firefox struct {
	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Scanner
}

type ffPage struct {
	ff *firefox
	id int
}

var npmOnce sync.Once
var npmErr error

// startFirefox installs the driver's pinned packages when they are missing
// or stale (npm ci), starts the driver and launches Firefox with prefs.
func startFirefox(t *testing.T, prefs map[string]any) *firefox {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs firefox and node")
	}
	bin := firefoxBinary(t)
	dir := filepath.Join(proxytest.ModuleRoot(t), "browsertests", "firefox")
	npmOnce.Do(func() { npmErr = npmCI(dir) })
	if npmErr != nil {
		t.Fatal(npmErr)
	}
	cmd := exec.Command("node", "driver.mjs")
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node driver.mjs: %v", err)
	}
	ff := &firefox{in: in, out: bufio.NewScanner(out)}
	ff.out.Buffer(make([]byte, 1<<20), 16<<20)
	t.Cleanup(func() {
		ff.call(map[string]any{"op": "close"})
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	start := time.Now()
	version, err := ff.call(map[string]any{"op": "launch", "executable": bin, "prefs": prefs})
	if err != nil {
		t.Fatalf("launch Firefox: %v\n%s", err, stderr.String())
	}
	t.Logf("%s launched in %s", version, time.Since(start).Round(time.Millisecond))
	return ff
}

// firefoxBinary finds Firefox ESR: $FIREFOX, then PATH, then Debian's path.
func firefoxBinary(t *testing.T) string {
	if p := os.Getenv("FIREFOX"); p != "" {
		return p
	}
	if p, err := exec.LookPath("firefox-esr"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/firefox-esr"); err == nil {
		return "/usr/bin/firefox-esr"
	}
	t.Fatal("firefox-esr not found: install it (apt-get install -y firefox-esr) or set FIREFOX; `make test` does this for you")
	return ""
}

// npmCI runs `npm ci` in dir unless node_modules was installed from the
// same package-lock.json (a stamp file holds its hash).
func npmCI(dir string) error {
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", ".impersonator-lock-sha256")
	if got, err := os.ReadFile(stamp); err == nil && string(got) == want {
		return nil
	}
	cmd := exec.Command("npm", "ci", "--prefer-offline", "--no-audit", "--no-fund")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PUPPETEER_SKIP_DOWNLOAD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
	}
	return os.WriteFile(stamp, []byte(want), 0o644)
}

// call sends one command and returns its value (raw JSON).
func (ff *firefox) call(cmd map[string]any) (string, error) {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	b, err := json.Marshal(cmd)
	if err != nil {
		return "", err
	}
	if _, err := ff.in.Write(append(b, '\n')); err != nil {
		return "", err
	}
	if !ff.out.Scan() {
		return "", fmt.Errorf("driver gone: %v", ff.out.Err())
	}
	var answer struct {
		OK    bool            `json:"ok"`
		Value json.RawMessage `json:"value"`
		Error string          `json:"error"`
	}
	if err := json.Unmarshal(ff.out.Bytes(), &answer); err != nil {
		return "", fmt.Errorf("driver answered %q: %v", ff.out.Text(), err)
	}
	if !answer.OK {
		return "", fmt.Errorf("%s", answer.Error)
	}
	return string(answer.Value), nil
}

func (ff *firefox) must(t *testing.T, cmd map[string]any) string {
	t.Helper()
	v, err := ff.call(cmd)
	if err != nil {
		t.Fatalf("firefox %v: %v", cmd["op"], err)
	}
	return v
}

// page opens a page in a fresh browser context: its own cookie jar.
func (ff *firefox) page(t *testing.T) *ffPage {
	t.Helper()
	var id int
	if err := json.Unmarshal([]byte(ff.must(t, map[string]any{"op": "page"})), &id); err != nil {
		t.Fatal(err)
	}
	return &ffPage{ff: ff, id: id}
}

// control confirms the profile's cookie setting in a throwaway context:
// the panel's page asks the app's origin to set a cookie and whether it
// came back (fromPanel), then the app's own page asks (onApp).
func (ff *firefox) control(t *testing.T, d *deployment, fromPanel, onApp string) {
	t.Helper()
	p := ff.page(t)
	defer p.close(t)
	p.open(t, d.panelURL+"/")
	if got := p.eval(t, `checkThirdPartyCookies()`); got != jsString(fromPanel) {
		t.Fatalf("control cookie from the panel's page: %s, want %s", got, fromPanel)
	}
	p.open(t, d.appURL+browserflow.ControlPath+"/echo")
	if got := p.eval(t, `document.body.textContent`); got != jsString(onApp) {
		t.Fatalf("control cookie on the app's own page: %s, want %s", got, onApp)
	}
}

func (p *ffPage) open(t *testing.T, url string) {
	t.Helper()
	p.ff.must(t, map[string]any{"op": "goto", "page": p.id, "url": url})
}

// eval returns the expression's value as JSON.
func (p *ffPage) eval(t *testing.T, expr string) string {
	t.Helper()
	return p.ff.must(t, map[string]any{"op": "eval", "page": p.id, "expr": expr})
}

// wait returns the expression's first truthy value (as JSON).
func (p *ffPage) wait(t *testing.T, expr string, timeout time.Duration) string {
	t.Helper()
	return p.ff.must(t, map[string]any{"op": "wait", "page": p.id, "expr": expr, "timeout": timeout.Milliseconds()})
}

func (p *ffPage) close(t *testing.T) {
	t.Helper()
	p.ff.must(t, map[string]any{"op": "closePage", "page": p.id})
}
