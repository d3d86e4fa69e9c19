package browserflow_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/browsertest"
)

// TestDeliveryInChromium runs the Impersonate action end to end in headless
// Chromium over HTTPS, for each delivery mode, with third-party cookies
// allowed or blocked (the profile's setting, confirmed by a control cookie),
// across two sites: the admin panel on https://127.0.0.1 and the customer
// app, with impersonator under its host, on https://localhost. Each
// scenario checks what the app's page shows (forward-auth) and the banner,
// ends the session with the banner's End button, counts the live sessions
// and reads the audit log; and no credential (W, R or a session JWT) may
// appear in any line of either front server's access log.
func TestDeliveryInChromium(t *testing.T) {
	ca := newCA(t)

	t.Run("auto, third-party cookies allowed: the webhook's session is kept, R is not needed", func(t *testing.T) {
		d := newDeployment(t, ca, setup{delivery: "auto"})
		ctx := browser(t, d, browsertest.Options{Cookies: browsertest.AllowThirdParty})
		impersonate(t, ctx, d, "")
		seesImpersonation(t, ctx, d)
		wantLogins(t, d, "webhook 200", "start page 303")
		wantOneLive(t, d)
		wantEvent(t, d, audit.Redeemed, "webhook credential")
		wantEvent(t, d, audit.Rejected, "redirect credential not needed: the webhook's cookie was kept")
		wantNo(t, d, audit.Ended, "superseded")
		endsWithButton(t, ctx, d)
		noCredentialsLogged(t, d, "webhook token W", "start-page token R", "session cookie")
	})

	t.Run("auto, third-party cookies blocked: R opens the session, the webhook's is superseded", func(t *testing.T) {
		d := newDeployment(t, ca, setup{delivery: "auto"})
		ctx := browser(t, d, browsertest.Options{Cookies: browsertest.BlockThirdParty})
		impersonate(t, ctx, d, "")
		seesImpersonation(t, ctx, d)
		wantLogins(t, d, "webhook 200", "start page 303")
		wantOneLive(t, d)
		wantEvent(t, d, audit.Redeemed, "webhook credential")
		wantEvent(t, d, audit.Ended, "superseded: the browser did not keep the webhook's cookie")
		wantEvent(t, d, audit.Redeemed, "redirect credential: the browser did not keep the webhook's cookie; its session was superseded")
		endsWithButton(t, ctx, d)
		noCredentialsLogged(t, d, "webhook token W", "start-page token R", "session cookie")
	})

	t.Run("auto, the tab opens before the webhook completes: the late webhook is refused", func(t *testing.T) {
		d := newDeployment(t, ca, setup{delivery: "auto", tabFirst: true})
		ctx := browser(t, d, browsertest.Options{Cookies: browsertest.AllowThirdParty})
		impersonate(t, ctx, d, "?order=tab-first")
		seesImpersonation(t, ctx, d)
		select {
		case code := <-d.heldWebhookStatus:
			if code != 401 {
				t.Errorf("the late webhook got %d, want 401", code)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the held webhook never reached impersonator")
		}
		wantLogins(t, d, "start page 303", "webhook 401")
		wantOneLive(t, d)
		wantEvent(t, d, audit.Redeemed, "redirect credential")
		wantEvent(t, d, audit.Rejected, "webhook credential refused: the grant's session was opened first-party (redirect credential) already")
		endsWithButton(t, ctx, d)
		noCredentialsLogged(t, d, "webhook token W", "start-page token R", "session cookie")
	})

	t.Run("redirect, third-party cookies blocked: impersonating", func(t *testing.T) {
		d := newDeployment(t, ca, setup{delivery: "redirect"})
		profile := t.TempDir()
		ctx := browser(t, d, browsertest.Options{Cookies: browsertest.BlockThirdParty, UserDataDir: profile})
		impersonate(t, ctx, d, "")
		seesImpersonation(t, ctx, d)
		wantLogins(t, d, "start page 303")
		wantOneLive(t, d)
		wantEvent(t, d, audit.Redeemed, "")
		endsWithButton(t, ctx, d)
		noCredentialsLogged(t, d, "start-page token R", "session cookie")

		// The start page removes the token from the address bar and the
		// tab's history (seesImpersonation), but Chromium's history
		// database on disk keeps the URL it visited, fragment included:
		// what the README says of it. The token is spent by then.
		browsertest.Close(t, ctx)
		db, err := os.ReadFile(filepath.Join(profile, "Default", "History"))
		if err != nil {
			t.Fatal(err)
		}
		var r string
		for cred, what := range d.credentials() {
			if what == "start-page token R" {
				r = cred
			}
		}
		if !bytes.Contains(db, []byte("/impersonation/start#token="+r)) {
			t.Errorf("Chromium's History file no longer holds the start page's URL with its token: update README, \"Which delivery?\"")
		}
	})

	t.Run("webhook, third-party cookies blocked: not impersonating, the session is ended as never used", func(t *testing.T) {
		d := newDeployment(t, ca, setup{delivery: "webhook"})
		ctx := browser(t, d, browsertest.Options{Cookies: browsertest.BlockThirdParty})
		impersonate(t, ctx, d, "")
		who := landOnApp(t, ctx, d)
		if who != "Not impersonating: nobody is signed in." {
			t.Errorf("app page says %q, want not impersonating", who)
		}
		// The login worked; the browser dropped its cookie.
		wantLogins(t, d, "webhook 200")
		if got := browsertest.Get(t, ctx, 5*time.Second, chromedp.Evaluate[bool](`!!document.querySelector('[data-impersonator-banner]')`)); got {
			t.Error("a banner shows without a session")
		}
		// IMPERSONATOR_SESSION_UNUSED=2s, the sweeper every 200ms.
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
		if got := d.metric("impersonator_sessions_unused_total"); got != "1" {
			t.Errorf("impersonator_sessions_unused_total = %q, want 1", got)
		}
		noCredentialsLogged(t, d, "webhook token W", "session cookie")
	})

	t.Run("read-only impersonation: the banner says so, every event carries the scope", func(t *testing.T) {
		d := newDeployment(t, ca, setup{delivery: "auto", policy: "default_access: read\n"})
		ctx := browser(t, d, browsertest.Options{Cookies: browsertest.BlockThirdParty})
		impersonate(t, ctx, d, "")
		landOnApp(t, ctx, d)
		text := browsertest.Get(t, ctx, 20*time.Second, chromedp.Poll[string](bannerText+` || false`, chromedp.WithPollingTimeout(15*time.Second)))
		if !strings.HasPrefix(text, "You are viewing as Grace Hopper (42) (read-only), impersonated by ada@example.com · ends in 29:") {
			t.Errorf("banner = %q, want it to say read-only", text)
		}
		for _, e := range d.events() {
			if e.Subject.ID == "42" && e.Scope != "read" {
				t.Errorf("event %s %q has scope %q, want read", e.Type, e.Detail, e.Scope)
			}
		}
		endsWithButton(t, ctx, d)
		noCredentialsLogged(t, d, "webhook token W", "start-page token R", "session cookie")
	})

	t.Run("policy refusal: Forest's error toast, nothing minted", func(t *testing.T) {
		d := newDeployment(t, ca, setup{delivery: "auto", policy: "never:\n  users: [\"42\"]\n"})
		ctx := browser(t, d, browsertest.Options{Cookies: browsertest.AllowThirdParty})
		browsertest.Do(t, ctx, 20*time.Second, chromedp.Navigate(d.panelURL+"/"), chromedp.Click(chromedp.CSS(`button[data-id="42"]`)))
		browsertest.WaitTrue(t, ctx, 15*time.Second, `window.panel.state === "refused"`)
		toast := browsertest.Get(t, ctx, 5*time.Second, chromedp.Evaluate[string](`document.getElementById("toast").className + ": " + document.getElementById("toast").textContent`))
		if toast != "toast error: You are not allowed to impersonate this record." {
			t.Errorf("panel toast = %q, want Forest's error toast with the answer's errors[0].detail", toast)
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
	})
}

// browser starts Chromium with the cookie setting and confirms it: the
// panel's page asks the app's origin (another site) to set a cookie, and
// the cookie comes back, and is in the browser's store, only if
// third-party cookies are allowed.
func browser(t *testing.T, d *deployment, o browsertest.Options) context.Context {
	t.Helper()
	o.IgnoreCertErrors = true
	c := o.Cookies
	ctx := browsertest.NewWith(t, o)
	browsertest.Do(t, ctx, 20*time.Second, chromedp.Navigate(d.panelURL+"/"))
	got := browsertest.Get(t, ctx, 10*time.Second, chromedp.Evaluate[string](`checkThirdPartyCookies()`, chromedp.EvalAwaitPromise))
	stored, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{d.appURL + "/"}})
	if err != nil {
		t.Fatal(err)
	}
	want, wantStored := "dropped", 0
	if c == browsertest.AllowThirdParty {
		want, wantStored = "kept", 1
	}
	if got != want || len(stored.Cookies) != wantStored {
		t.Fatalf("control cookie: %s, %d in the browser's store; the profile setting wants %s, %d", got, len(stored.Cookies), want, wantStored)
	}
	// The control cookie stays out of the flow under test.
	if _, err := chromedp.Call(ctx, network.ClearBrowserCookies, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// impersonate opens the panel (with query) and clicks Impersonate on users
// 42; the panel then does the action, the webhook and redirectTo.
func impersonate(t *testing.T, ctx context.Context, d *deployment, query string) {
	t.Helper()
	browsertest.Do(t, ctx, 20*time.Second, chromedp.Navigate(d.panelURL+"/"+query), chromedp.Click(chromedp.CSS(`button[data-id="42"]`)))
}

// landOnApp waits for the app's page and returns what it says of who is
// signed in (the app learnt it through forward-auth).
func landOnApp(t *testing.T, ctx context.Context, d *deployment) string {
	t.Helper()
	browsertest.WaitTrue(t, ctx, 20*time.Second, `location.href === `+jsString(d.appURL+"/")+` && document.readyState === "complete" && !!document.getElementById("who")`)
	return browsertest.Get(t, ctx, 5*time.Second, chromedp.Evaluate[string](`document.getElementById("who").textContent`))
}

const bannerText = `(() => { const h = document.querySelector('[data-impersonator-banner]'); return h ? h.shadowRoot.querySelector('span').textContent : ""; })()`

// seesImpersonation: the browser lands on the app, which knows the
// customer and the admin through forward-auth, and the banner shows them
// with the session's countdown; the address bar holds no token.
func seesImpersonation(t *testing.T, ctx context.Context, d *deployment) {
	t.Helper()
	if who := landOnApp(t, ctx, d); who != "Signed in as Grace Hopper (customer 42), impersonated by ada@example.com." {
		t.Fatalf("app page says %q, want it signed in as customer 42 by ada", who)
	}
	text := browsertest.Get(t, ctx, 20*time.Second, chromedp.Poll[string](bannerText+` || false`, chromedp.WithPollingTimeout(15*time.Second)))
	if !strings.HasPrefix(text, "You are viewing as Grace Hopper (42), impersonated by ada@example.com · ends in 29:") {
		t.Errorf("banner = %q", text)
	}
	hist := browsertest.Get(t, ctx, 5*time.Second, chromedp.NavigationEntries())
	for _, e := range hist.Entries {
		if strings.Contains(e.URL, "token=") {
			t.Errorf("the tab's history holds a token: %q", e.URL)
		}
	}
}

// endsWithButton clicks the banner's End: the session ends, the page
// reloads and says nobody is signed in, and no session is live.
func endsWithButton(t *testing.T, ctx context.Context, d *deployment) {
	t.Helper()
	browsertest.Do(t, ctx, 10*time.Second, chromedp.Evaluate[chromedp.Void](
		`setTimeout(() => document.querySelector('[data-impersonator-banner]').shadowRoot.querySelector('button').click(), 0)`))
	browsertest.WaitTrue(t, ctx, 15*time.Second, `document.readyState === "complete" && performance.getEntriesByType("navigation")[0].type === "reload"`+
		` && !document.querySelector('[data-impersonator-banner]') && document.getElementById("who").dataset.subject === ""`)
	if n := len(d.liveSessions()); n != 0 {
		t.Errorf("%d live sessions after End, want 0", n)
	}
	if !hasEvent(d.events(), audit.Ended, "logout") {
		t.Errorf("no session.ended logout event after End: %v", steps(d.events()))
	}
}

func wantLogins(t *testing.T, d *deployment, want ...string) {
	t.Helper()
	if got := d.loginAnswers(); strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("impersonator answered the logins %q, want %q", got, want)
	}
}

func wantOneLive(t *testing.T, d *deployment) {
	t.Helper()
	live := d.liveSessions()
	if len(live) != 1 || live[0].Subject.ID != "42" {
		t.Errorf("live sessions = %+v, want exactly one, of users 42; events: %v", live, steps(d.events()))
	}
}

// hasEvent reports whether evs hold an event of typ whose detail starts
// with detail.
func hasEvent(evs []audit.Event, typ audit.Type, detail string) bool {
	for _, e := range evs {
		if e.Type == typ && strings.HasPrefix(e.Detail, detail) {
			return true
		}
	}
	return false
}

func wantEvent(t *testing.T, d *deployment, typ audit.Type, detail string) {
	t.Helper()
	if evs := d.events(); !hasEvent(evs, typ, detail) {
		t.Errorf("no %s %q in the audit log: %v", typ, detail, steps(evs))
	}
}

func wantNo(t *testing.T, d *deployment, typ audit.Type, detail string) {
	t.Helper()
	if evs := d.events(); hasEvent(evs, typ, detail) {
		t.Errorf("unexpected %s %q in the audit log: %v", typ, detail, steps(evs))
	}
}

func steps(evs []audit.Event) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, string(e.Type)+" "+e.Detail)
	}
	return out
}

// noCredentialsLogged: the access logs of both front servers hold no
// credential impersonator handed out; the kinds named must have been seen
// (so the check checked something).
func noCredentialsLogged(t *testing.T, d *deployment, kinds ...string) {
	t.Helper()
	creds := d.credentials()
	seen := map[string]bool{}
	for _, what := range creds {
		seen[what] = true
	}
	for _, k := range kinds {
		if !seen[k] {
			t.Errorf("no %s was handed out, so none could be checked", k)
		}
	}
	lines := d.log.Lines()
	if len(lines) == 0 {
		t.Fatal("empty access logs")
	}
	for _, line := range lines {
		for cred, what := range creds {
			if strings.Contains(line, cred) {
				t.Errorf("access log line holds the %s: %s", what, line)
			}
		}
		if strings.Contains(line, "token=") {
			t.Errorf("access log line holds a token parameter: %s", line)
		}
	}
}

func jsString(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}
