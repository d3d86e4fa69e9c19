// Package browserflow is the browser's side of an impersonation, played by
// real pages: an admin panel that behaves like the Forest UI for the
// Impersonate action (the action, its webhook, its redirectTo), and a
// customer app that serves impersonator under its own host (a reverse
// proxy for /impersonation/*, /.well-known/* and /forest/*), sees the
// session through forward-auth, and shows the banner. Every request both
// front servers get is written to an access log.
//
// Its tests drive these pages in headless Chromium over HTTPS, with
// third-party cookies allowed and blocked, in each delivery mode; the
// `impersonator demo` command serves the same pages for a person to click.
package browserflow

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// User is a customer of the app, as both the panel and the app list them.
type User struct {
	ID, Name, Email string
}

// Users are the demo's and the tests' customers.
var Users = []User{
	{"42", "Grace Hopper", "grace@customer.example"},
	{"43", "Katherine Johnson", "katherine@customer.example"},
	{"44", "Alan Turing", "alan@customer.example"},
}

func userName(id string) string {
	for _, u := range Users {
		if u.ID == id {
			return u.Name
		}
	}
	return "customer " + id
}

// AccessLog records one line per request of every front server it wraps:
// the time, the server's name, the method, the full URL with its query,
// the status and the duration. Tests check it for tokens: a credential in
// a URL ends up in logs like this one.
type AccessLog struct {
	// Out, when set, receives each line as it is written.
	Out io.Writer

	mu    sync.Mutex
	lines []string
}

// Wrap returns h, logging each of its requests under name.
func (l *AccessLog) Wrap(name string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		line := fmt.Sprintf("%s %s %s %s://%s%s %d %s", start.UTC().Format(time.RFC3339Nano), name, r.Method, scheme, r.Host,
			r.URL.RequestURI(), sw.status, time.Since(start).Round(time.Microsecond))
		l.mu.Lock()
		l.lines = append(l.lines, line)
		if l.Out != nil {
			fmt.Fprintln(l.Out, line)
		}
		l.mu.Unlock()
	})
}

// Lines returns the lines written so far.
func (l *AccessLog) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Panel serves the admin panel's page: the users, a Reason field and an
// Impersonate button per user. The button does what the Forest UI does for
// a smart action: it POSTs the action (cross-origin, the admin's bearer
// JWT, credentials included) and shows the answer's `success` in a toast,
// or its `errors[0].detail` (JSON:API) in an error toast; then it sends the
// answer's webhook with fetch(url, {method, headers, body, credentials:
// 'include'}) and awaits it; then it opens redirectTo in the same tab.
//
// With ?order=tab-first the page opens redirectTo without awaiting the
// webhook (sent with keepalive, so it outlives the page): the race auto
// delivery must survive.
//
// The page sets window.panel.state (idle, running, refused, error,
// redirecting, done) and window.panel.steps for tests; while window.hold is
// true it waits before opening redirectTo (so a test can take the panel's
// screenshot). checkThirdPartyCookies() (when ControlURL is set) asks the
// app's origin to set a cookie from this page, then whether it came back:
// "kept" or "dropped".
type Panel struct {
	// ActionURL is where the action is posted.
	ActionURL string
	// Bearer returns the Forest UI's JWT for the signed-in admin.
	Bearer func() (string, error)
	// Admin is shown as the signed-in admin.
	Admin string
	// Reason prefills the Reason field.
	Reason string
	// ControlURL is the app's control-cookie endpoint (App.Control); empty
	// leaves checkThirdPartyCookies out.
	ControlURL string
}

type panelConfig struct {
	ActionURL  string `json:"actionURL"`
	Bearer     string `json:"bearer"`
	ControlURL string `json:"controlURL,omitempty"`
}

// ServeHTTP serves the page at / (and 404 elsewhere).
func (p *Panel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	bearer, err := p.Bearer()
	if err != nil {
		http.Error(w, "cannot sign the admin's token: "+err.Error(), http.StatusInternalServerError)
		return
	}
	// html/template writes the config into the script as JSON, escaped.
	cfg := panelConfig{ActionURL: p.ActionURL, Bearer: bearer, ControlURL: p.ControlURL}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	_ = panelPage.Execute(w, map[string]any{"Config": cfg, "Users": Users, "Admin": p.Admin, "Reason": p.Reason})
}

var panelPage = template.Must(template.New("panel").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Admin panel · Users</title>
<style>
body{margin:0;font:14px/1.5 system-ui,sans-serif;background:#f4f5f7;color:#1f2430}
header{background:#1f2430;color:#fff;padding:10px 20px;display:flex;justify-content:space-between;align-items:center}
header b{font-size:16px}
main{max-width:760px;margin:24px auto;background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;padding:16px 20px}
h1{font-size:18px;margin:0 0 12px}
label{display:block;margin:0 0 12px}
input{font:inherit;width:100%;box-sizing:border-box;padding:6px 8px;border:1px solid #c8ccd4;border-radius:4px}
table{width:100%;border-collapse:collapse}
td,th{text-align:left;padding:8px 6px;border-top:1px solid #eceef2}
button{font:inherit;background:#3d5afe;color:#fff;border:0;border-radius:4px;padding:4px 12px;cursor:pointer}
.toast{position:fixed;top:56px;right:20px;max-width:360px;padding:10px 14px;border-radius:4px;color:#fff;box-shadow:0 2px 6px #0003}
.toast.success{background:#2e7d32}.toast.error{background:#c62828}
ol{color:#555;font:12px/1.6 ui-monospace,monospace;padding-left:20px}
</style></head>
<body>
<header><b>Admin panel</b><span>{{.Admin}}</span></header>
<main>
<h1>Users</h1>
<label>Reason (audited) <input id="reason" value="{{.Reason}}"></label>
<table><thead><tr><th>id</th><th>name</th><th>email</th><th></th></tr></thead><tbody>
{{range .Users}}<tr><td>{{.ID}}</td><td>{{.Name}}</td><td>{{.Email}}</td><td><button type="button" data-id="{{.ID}}">Impersonate</button></td></tr>
{{end}}</tbody></table>
<ol id="log"></ol>
</main>
<div id="toast" class="toast" role="status" hidden></div>
<script type="application/json" id="config">{{.Config}}</script>
<script>
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("config").textContent);
  var order = new URLSearchParams(location.search).get("order") || "webhook-first";
  var toast = document.getElementById("toast");
  var panel = window.panel = { state: "idle", steps: [] };
  function step(s) {
    panel.steps.push(s);
    var li = document.createElement("li");
    li.textContent = s;
    document.getElementById("log").appendChild(li);
  }
  function show(kind, text) { toast.className = "toast " + kind; toast.textContent = text; toast.hidden = false; }
  // The panel's own log shows no token: the fragment is elided.
  function shown(u) { return String(u).replace(/#.*/, "#…"); }
  function held() {
    return new Promise(function (done) { (function wait() { if (window.hold) { setTimeout(wait, 50); } else { done(); } })(); });
  }
  async function impersonate(id) {
    panel.state = "running";
    var reason = document.getElementById("reason").value;
    step("POST " + cfg.actionURL + " (users " + id + ")");
    var res, body;
    try {
      res = await fetch(cfg.actionURL, {
        method: "POST", credentials: "include",
        headers: { "Authorization": "Bearer " + cfg.bearer, "Content-Type": "application/json" },
        body: JSON.stringify({ data: { type: "custom-action-requests", attributes: {
          collection_name: "users", ids: [id], values: { Reason: reason }, smart_action_id: "users-impersonate" } } })
      });
      body = await res.json();
    } catch (e) {
      show("error", "The action failed: " + e);
      panel.state = "error";
      return;
    }
    if (!res.ok) {
      var detail = (body.errors && body.errors[0] && body.errors[0].detail) || body.error || ("HTTP " + res.status);
      step("→ " + res.status + " " + detail);
      show("error", detail);
      panel.state = "refused";
      return;
    }
    step("→ " + res.status + " " + body.success);
    show("success", body.success);
    var wh = body.webhook;
    if (wh) {
      var init = { method: wh.method, headers: wh.headers, body: JSON.stringify(wh.body), credentials: "include" };
      if (order === "tab-first") {
        init.keepalive = true;
        step("webhook " + wh.method + " " + wh.url + " (not awaited)");
        fetch(wh.url, init).catch(function () {});
      } else {
        step("webhook " + wh.method + " " + wh.url);
        try {
          var wr = await fetch(wh.url, init);
          panel.webhook = wr.status;
          step("→ " + wr.status);
        } catch (e) {
          panel.webhook = "failed";
          step("→ failed: " + e);
        }
      }
    }
    if (body.redirectTo) {
      panel.state = "redirecting";
      step("open " + shown(body.redirectTo));
      await held();
      location.assign(body.redirectTo);
      return;
    }
    panel.state = "done";
  }
  document.querySelectorAll("button[data-id]").forEach(function (b) {
    b.addEventListener("click", function () { impersonate(b.getAttribute("data-id")); });
  });
  if (cfg.controlURL) {
    window.checkThirdPartyCookies = async function () {
      await fetch(cfg.controlURL + "/set", { credentials: "include" });
      var r = await fetch(cfg.controlURL + "/echo", { credentials: "include" });
      return r.text();
    };
  }
})();
</script>
</body></html>
`))

// ControlPath is where the app serves the control cookie's endpoints.
const ControlPath = "/_control"

// controlCookie is set by the panel's cross-site request: whether the
// browser keeps it says whether it keeps third-party cookies.
const controlCookie = "thirdparty_control"

// App is the customer app's front server: impersonator under the app's own
// host (a reverse proxy for /impersonation/*, /.well-known/* and /forest/*,
// the last for the admin panel's cross-site action call), and the app's
// page, which learns who is signed in by forward-auth (GET
// /impersonation/session from the server side with the browser's cookies)
// and includes the banner, passing it the customer's name when impersonated.
type App struct {
	// Service is impersonator's base URL (http://127.0.0.1:port).
	Service *url.URL
	// PanelOrigin may call the control endpoints with credentials.
	PanelOrigin string
	// ModifyResponse, when set, sees each of impersonator's answers
	// before the browser does (tests collect the credentials there).
	ModifyResponse func(*http.Response) error
	// Client makes the forward-auth calls; a 3-second client when nil.
	Client *http.Client

	once  sync.Once
	proxy *httputil.ReverseProxy
}

func (a *App) init() {
	a.once.Do(func() {
		a.proxy = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(a.Service)
				pr.Out.Host = pr.In.Host
				pr.SetXForwarded()
			},
			ModifyResponse: a.ModifyResponse,
		}
		if a.Client == nil {
			a.Client = &http.Client{Timeout: 3 * time.Second}
		}
	})
}

// Proxied reports whether the app sends path to impersonator.
func Proxied(path string) bool {
	for _, p := range []string{"/impersonation/", "/.well-known/", "/forest/"} {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// ServeHTTP routes one request of the app's origin.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.init()
	switch {
	case Proxied(r.URL.Path):
		a.proxy.ServeHTTP(w, r)
	case r.URL.Path == ControlPath+"/set" || r.URL.Path == ControlPath+"/echo":
		a.control(w, r)
	case r.URL.Path == "/":
		a.page(w, r)
	default:
		http.NotFound(w, r)
	}
}

// control sets the control cookie, or says whether the request carried it.
func (a *App) control(w http.ResponseWriter, r *http.Request) {
	if a.PanelOrigin != "" && r.Header.Get("Origin") == a.PanelOrigin {
		w.Header().Set("Access-Control-Allow-Origin", a.PanelOrigin)
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		w.Header().Set("Vary", "Origin")
	}
	w.Header().Set("Cache-Control", "no-store")
	if strings.HasSuffix(r.URL.Path, "/set") {
		http.SetCookie(w, &http.Cookie{Name: controlCookie, Value: "1", Path: "/", Secure: true, HttpOnly: true,
			SameSite: http.SameSiteNoneMode, MaxAge: 600})
		fmt.Fprint(w, "set")
		return
	}
	if _, err := r.Cookie(controlCookie); err == nil {
		fmt.Fprint(w, "kept")
		return
	}
	fmt.Fprint(w, "dropped")
}

// Who is what forward-auth says of a request: the impersonated customer
// and the admin, or nobody.
type Who struct{ Subject, Actor string }

// forwardAuth asks impersonator who the request's cookies say is signed
// in. It fails safe: any answer but 200 (and any error) is "nobody".
func (a *App) forwardAuth(ctx context.Context, r *http.Request) Who {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.Service.JoinPath("/impersonation/session").String(), nil)
	if err != nil {
		return Who{}
	}
	if c := r.Header.Get("Cookie"); c != "" {
		req.Header.Set("Cookie", c)
	}
	res, err := a.Client.Do(req)
	if err != nil {
		return Who{}
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		return Who{}
	}
	return Who{Subject: res.Header.Get("X-Impersonation-Subject"), Actor: res.Header.Get("X-Impersonation-Actor")}
}

func (a *App) page(w http.ResponseWriter, r *http.Request) {
	who := a.forwardAuth(r.Context(), r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", AppCSP)
	data := map[string]any{"Who": who, "Name": userName(who.Subject)}
	_ = appPage.Execute(w, data)
}

// AppCSP is the app page's Content-Security-Policy, as strict as an app's
// can be with the banner: scripts and requests only from the app's origin
// (impersonator is under it), no inline script, and no style but the
// page's own stylesheet (by its hash). The banner styles itself through
// the CSSOM, which style-src does not restrict.
var AppCSP = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'sha256-" + appStyleHash() +
	"'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

var appPageSource = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Customer app</title>
<style>
body{margin:0;font:14px/1.5 system-ui,sans-serif;background:#fafaf7;color:#222}
header{background:#0b6e4f;color:#fff;padding:10px 20px}
main{max-width:700px;margin:24px auto;background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;padding:16px 20px}
table{width:100%;border-collapse:collapse}td,th{text-align:left;padding:6px;border-top:1px solid #eee}
.muted{color:#777}
</style>
<script src="/impersonation/banner.js"{{if .Who.Subject}} data-name="{{.Name}}"{{end}} defer></script>
</head>
<body>
<header><b>Customer app</b></header>
<main>
{{if .Who.Subject}}<p id="who" data-subject="{{.Who.Subject}}" data-actor="{{.Who.Actor}}">Signed in as <b>{{.Name}}</b> (customer {{.Who.Subject}}), impersonated by {{.Who.Actor}}.</p>
<h2>Invoices</h2>
<table><thead><tr><th>number</th><th>date</th><th>amount</th><th>status</th></tr></thead><tbody>
<tr><td>INV-1042</td><td>2026-10-01</td><td>€ 120.00</td><td>paid</td></tr>
<tr><td>INV-1077</td><td>2026-11-01</td><td>€ 120.00</td><td>due</td></tr>
</tbody></table>
{{else}}<p id="who" data-subject="">Not impersonating: nobody is signed in.</p>
<p class="muted">The app's own sign-in page would be here.</p>{{end}}
</main>
</body></html>
`

var appPage = template.Must(template.New("app").Parse(appPageSource))

// appStyleHash is the base64 SHA-256 of the page's one <style> element.
func appStyleHash() string {
	_, css, _ := strings.Cut(appPageSource, "<style>")
	css, _, _ = strings.Cut(css, "</style>")
	sum := sha256.Sum256([]byte(css))
	return base64.StdEncoding.EncodeToString(sum[:])
}
