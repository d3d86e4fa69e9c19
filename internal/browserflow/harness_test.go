package browserflow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/browserflow"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/server"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
	"github.com/impersonator/impersonator/internal/token/tokentest"
)

const (
	forestSecret = "browserflow-forest-auth-secret-0123456789abcdef"
	adminToken   = "browserflow-admin-token-0123456789abcdef"
)

// setup is one scenario's deployment.
type setup struct {
	delivery string
	policy   string // YAML; the default policy when empty
	tabFirst bool   // hold the webhook until the start page's login is done
}

// deployment is the topology the scenarios run on:
//
//	Chromium ──https──▶ panel   https://127.0.0.1:PA  (the admin panel's page)
//	         ──https──▶ app     https://localhost:PB  (the customer app; a reverse
//	                              proxy sends /impersonation/*, /.well-known/* and
//	                              /forest/* to impersonator)
//	app ──http──▶ impersonator  http://127.0.0.1:PS   (IMPERSONATOR_PUBLIC_URL and
//	                              IMPERSONATOR_APP_URL = https://localhost:PB)
//
// The panel (site 127.0.0.1) and the app (site localhost) are different
// sites, as app.forestadmin.com and app.example.com are: the webhook's
// cookie is a third-party cookie. The panel calls the action cross-site
// through the app's proxy (CORS, IMPERSONATOR_ALLOWED_ORIGINS = the panel's
// origin), as the Forest UI calls an agent on another site.
type deployment struct {
	t                  *testing.T
	ca                 *testCA
	panelURL, appURL   string
	service            *httptest.Server
	store              *store.Store
	log                *browserflow.AccessLog
	mu                 sync.Mutex
	secrets            map[string]string // credential → what it is
	logins             []string          // impersonator's answers to logins: "webhook 200", "start page 303"
	webhookAfterLogin  chan struct{}     // closed once the start page's form login answered (tabFirst)
	heldWebhookStatus  chan int          // the held webhook's status (tabFirst)
	formLoginCompleted sync.Once
}

func newDeployment(t *testing.T, ca *testCA, s setup) *deployment {
	t.Helper()
	d := &deployment{t: t, ca: ca, log: &browserflow.AccessLog{}, secrets: map[string]string{},
		webhookAfterLogin: make(chan struct{}), heldWebhookStatus: make(chan int, 1)}
	panel := tlsServer(t, ca.leaf(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)}))
	app := tlsServer(t, ca.leaf(t, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}))
	d.panelURL = "https://" + panel.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())
	d.appURL = "https://localhost:" + port

	env := map[string]string{
		"IMPERSONATOR_PUBLIC_URL":      d.appURL,
		"IMPERSONATOR_APP_URL":         d.appURL,
		"IMPERSONATOR_ALLOWED_ORIGINS": d.panelURL,
		"IMPERSONATOR_DELIVERY":        s.delivery,
		"FOREST_AUTH_SECRET":           forestSecret,
		"IMPERSONATOR_ADMIN_TOKENS":    adminToken,
		"IMPERSONATOR_SESSION_UNUSED":  "2s",
		"IMPERSONATOR_SWEEP_INTERVAL":  "200ms",
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	policy := action.DefaultPolicy()
	if s.policy != "" {
		if policy, err = action.ParsePolicy([]byte(s.policy)); err != nil {
			t.Fatal(err)
		}
	}
	_, redisURL := redistest.EmbeddedURL(t)
	d.store, err = store.Open(redisURL, store.Options{Prefix: redistest.Prefix()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.store.Close() })
	keys := tokentest.Keyset(t, "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	metrics := server.NewMetrics(nil)
	d.service = httptest.NewServer(server.New(server.Deps{
		Log:      log,
		Settings: server.SettingsFrom(cfg),
		Store:    d.store,
		Keys:     keys,
		Issuer:   token.NewIssuer(keys, cfg.PublicURL, cfg.Audience, time.Now),
		Verifier: token.NewVerifier(keys, cfg.PublicURL, cfg.Audience, time.Now),
		Policy:   policy,
		Metrics:  metrics,
	}))
	t.Cleanup(d.service.Close)
	// The sweeper, as serve runs it: it ends the sessions nobody presents.
	sessions := session.New(session.Options{Log: log, Store: d.store, Events: audit.Encoder{Now: time.Now}, Unused: metrics.CountUnused})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		session.Sweeper{Store: d.store, Sessions: sessions, Owner: "browserflow", Interval: cfg.SweepInterval}.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })

	svcURL, _ := url.Parse(d.service.URL)
	appHandler := &browserflow.App{Service: svcURL, PanelOrigin: d.panelURL, ModifyResponse: d.collect}
	var h http.Handler = appHandler
	if s.tabFirst {
		h = d.holdWebhook(h)
	}
	app.Config.Handler = d.log.Wrap("app", h)
	panel.Config.Handler = d.log.Wrap("panel", &browserflow.Panel{
		ActionURL:  d.appURL + "/forest/actions/impersonate",
		Bearer:     forestBearer,
		Admin:      "ada@example.com",
		Reason:     "ticket 1234: customer cannot see invoices",
		ControlURL: d.appURL + browserflow.ControlPath,
	})
	panel.StartTLS()
	app.StartTLS()
	// Each front server's certificate verifies against the test's CA for
	// its own name, and the app's proxy reaches impersonator.
	client := ca.client()
	for _, u := range []string{d.panelURL + "/", d.appURL + "/.well-known/jwks.json"} {
		res, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", u, res.StatusCode)
		}
	}
	return d
}

// forestBearer is the Forest UI's JWT for ada, HS256 with FOREST_AUTH_SECRET.
func forestBearer() (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"id": 1001, "email": "ada@example.com", "team": "Support", "role": "Admin",
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(forestSecret))
}

// collect notes every credential impersonator hands the browser: the
// action's webhook token (W) and start-page token (R), and each session
// cookie's JWT. None of them may appear in an access log.
func (d *deployment) collect(res *http.Response) error {
	for _, c := range res.Cookies() {
		if strings.HasSuffix(c.Name, "impersonation_session") && c.Value != "" {
			d.secret(c.Value, "session cookie")
		}
	}
	if res.Request.URL.Path == "/impersonation/login" && res.Request.Method == http.MethodPost {
		from := "webhook"
		if mt, _, _ := mime.ParseMediaType(res.Request.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
			from = "start page"
		}
		d.mu.Lock()
		d.logins = append(d.logins, from+" "+strconv.Itoa(res.StatusCode))
		d.mu.Unlock()
	}
	if !strings.HasPrefix(res.Request.URL.Path, "/forest/") || res.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	res.Body.Close()
	res.Body = io.NopCloser(bytes.NewReader(body))
	var a struct {
		Webhook *struct {
			Body struct {
				Token string `json:"token"`
			} `json:"body"`
		} `json:"webhook"`
		RedirectTo string `json:"redirectTo"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return err
	}
	if a.Webhook != nil {
		d.secret(a.Webhook.Body.Token, "webhook token W")
	}
	if _, frag, ok := strings.Cut(a.RedirectTo, "#token="); ok {
		d.secret(frag, "start-page token R")
	}
	return nil
}

func (d *deployment) secret(v, what string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.secrets[v] = what
}

// loginAnswers lists impersonator's answers to the logins, in order.
func (d *deployment) loginAnswers() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.logins...)
}

func (d *deployment) credentials() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]string, len(d.secrets))
	for k, v := range d.secrets {
		out[k] = v
	}
	return out
}

// holdWebhook plays the race of a tab opened before the webhook completes:
// the webhook's JSON login waits (at most 15s) until the start page's form
// login has been answered, then goes on even if the panel's page is gone,
// as a request already on the wire does.
func (d *deployment) holdWebhook(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/impersonation/login" {
			next.ServeHTTP(w, r)
			return
		}
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt == "application/x-www-form-urlencoded" {
			next.ServeHTTP(w, r)
			d.formLoginCompleted.Do(func() { close(d.webhookAfterLogin) })
			return
		}
		select {
		case <-d.webhookAfterLogin:
		case <-time.After(15 * time.Second):
			d.t.Errorf("the start page never logged in while the webhook was held")
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r.WithContext(context.WithoutCancel(r.Context())))
		d.heldWebhookStatus <- rec.Code
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// admin calls impersonator's admin API.
func (d *deployment) admin(path string, v any) {
	d.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, d.service.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		d.t.Fatalf("GET %s: %d", path, res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		d.t.Fatalf("GET %s: %v", path, err)
	}
}

// liveSessions lists the live sessions (GET /v1/sessions).
func (d *deployment) liveSessions() []struct {
	ID      string        `json:"id"`
	Subject audit.Subject `json:"subject"`
} {
	var out struct {
		Sessions []struct {
			ID      string        `json:"id"`
			Subject audit.Subject `json:"subject"`
		} `json:"sessions"`
	}
	d.admin("/v1/sessions", &out)
	return out.Sessions
}

// events returns the audit log, oldest first (GET /v1/audit/events).
func (d *deployment) events() []audit.Event {
	var out struct {
		Events []audit.Event `json:"events"`
	}
	d.admin("/v1/audit/events?limit=1000", &out)
	for i, j := 0, len(out.Events)-1; i < j; i, j = i+1, j-1 {
		out.Events[i], out.Events[j] = out.Events[j], out.Events[i]
	}
	return out.Events
}

// metric reads one counter of impersonator's /metrics.
func (d *deployment) metric(name string) string {
	d.t.Helper()
	res, err := http.Get(d.service.URL + "/metrics")
	if err != nil {
		d.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}
