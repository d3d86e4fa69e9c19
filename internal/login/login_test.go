package login_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/server"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
	"github.com/impersonator/impersonator/internal/token/tokentest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const adminToken = "admin-token-0123456789abcdef0123456789"

// world is one deployment: keys and a Redis shared by its instances, and a
// clock the test moves.
type world struct {
	t      testing.TB
	url    string
	prefix string
	st     *store.Store
	keys   *token.Keyset
	now    time.Time
	mu     sync.Mutex
	env    map[string]string
}

func newWorld(t testing.TB, url string, env map[string]string) *world {
	t.Helper()
	keys := tokentest.Keyset(t, "")
	vars := map[string]string{
		"IMPERSONATOR_PUBLIC_URL":   "http://imp.test",
		"IMPERSONATOR_APP_URL":      "http://app.test",
		"IMPERSONATOR_ADMIN_TOKENS": adminToken,
	}
	for k, v := range env {
		vars[k] = v
	}
	w := &world{t: t, url: url, prefix: redistest.Prefix(), keys: keys, now: t0, env: vars}
	w.st = w.open()
	return w
}

func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = w.now.Add(d)
}

func (w *world) config() *config.Config {
	cfg, err := config.Load(nil, func(k string) string { return w.env[k] }, io.Discard)
	if err != nil {
		w.t.Fatal(err)
	}
	return cfg
}

// open opens a store of this world: each instance has its own client.
func (w *world) open() *store.Store {
	w.t.Helper()
	st, err := store.Open(w.url, store.Options{Prefix: w.prefix, Now: w.clock})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { st.Close() })
	return st
}

func (w *world) store() *store.Store { return w.st }

// instance is one running instance of the service in this world.
func (w *world) instance() http.Handler { return w.instanceWith(nil) }

// instanceWith is an instance with a session cache (nil: none), whose Run
// the caller starts.
func (w *world) instanceWith(cache *session.Cache) http.Handler {
	cfg := w.config()
	return server.New(server.Deps{
		SessionCache: cache,
		Log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		Settings:     server.SettingsFrom(cfg),
		Store:        w.open(),
		Keys:         w.keys,
		Issuer:       token.NewIssuer(w.keys, cfg.PublicURL, cfg.Audience, w.clock),
		Verifier:     token.NewVerifier(w.keys, cfg.PublicURL, cfg.Audience, w.clock),
		Now:          w.clock,
	})
}

var (
	ada = audit.Actor{ID: "1001", Email: "ada@example.com", Team: "Support", Role: "Admin"}
	u42 = audit.Subject{Collection: "users", ID: "42"}
)

// mint does what the Forest action does: sign a token, reserve it with its
// grant and minted event.
func (w *world) mint() (raw, jti string) {
	w.t.Helper()
	cfg := w.config()
	c := token.Claims{Act: token.Actor{Sub: ada.ID, Email: ada.Email}, Collection: u42.Collection}
	c.Subject = u42.ID
	raw, issued, err := token.NewIssuer(w.keys, cfg.PublicURL, cfg.Audience, w.clock).Issue(token.Impersonation, c, time.Minute)
	if err != nil {
		w.t.Fatal(err)
	}
	g := store.Grant{Actor: ada, Subject: u42, Reason: "ticket 1234", ExpiresAt: issued.ExpiresAt.Time}
	minted, err := audit.Encoder{Now: w.clock}.Encode(audit.Event{Type: audit.Minted, Actor: ada, Subject: u42, TokenID: issued.ID})
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.store().Reserve(context.Background(), store.Reservation{JTI: issued.ID, Grant: g, TTL: time.Minute, Minted: minted}); err != nil {
		w.t.Fatal(err)
	}
	return raw, issued.ID
}

func (w *world) events() []audit.Event {
	w.t.Helper()
	var out []audit.Event
	err := audit.NewLog(w.store(), w.clock).Range(context.Background(), "-", func(e audit.Entry) bool {
		if e.Event.Type != audit.Minted {
			out = append(out, e.Event)
		}
		return true
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

func loginJSON(h http.Handler, tok string) *httptest.ResponseRecorder {
	body, _ := json.Marshal(map[string]string{"token": tok})
	req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "test-browser")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func loginForm(h http.Handler, tok string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "test-browser")
	req.Header.Set("Sec-Fetch-Site", "same-origin") // posted by the start page
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func sessionCookie(t testing.TB, rec *httptest.ResponseRecorder) *http.Cookie {
	t.Helper()
	for _, c := range rec.Result().Cookies() {
		if strings.HasSuffix(c.Name, "impersonation_session") {
			return c
		}
	}
	t.Fatalf("no session cookie in %v", rec.Header()["Set-Cookie"])
	return nil
}

func get(h http.Handler, path string, c *http.Cookie) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if c != nil {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func do(h http.Handler, method, path string, c *http.Cookie, bearer string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	if c != nil {
		req.AddCookie(c)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

var ignoreVolatile = cmpopts.IgnoreFields(audit.Event{}, "ID", "RequestID", "SessionID", "Time")

func TestLoginJSON(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, nil)
	h := w.instance()
	raw, jti := w.mint()
	rec := loginJSON(h, raw)
	if rec.Code != 200 {
		t.Fatalf("status = %d, want 200: %s", rec.Code, rec.Body.String())
	}
	want := `{"subject":"42","actor":{"id":"1001","email":"ada@example.com"},"expires_at":"2026-11-25T10:30:00Z","redirect_to":"http://app.test"}` + "\n"
	if rec.Body.String() != want {
		t.Errorf("body = %s, want %s", rec.Body.String(), want)
	}
	c := sessionCookie(t, rec)
	if c.Name != "impersonation_session" || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteNoneMode || c.Path != "/" {
		t.Errorf("cookie = %+v, want impersonation_session; HttpOnly; Secure; SameSite=None; Path=/ (webhook delivery)", c)
	}
	sc, err := token.NewVerifier(w.keys, "http://imp.test", "http://app.test", w.clock).Verify(token.Session, c.Value)
	if err != nil {
		t.Fatalf("cookie is not a verifiable session JWT: %v", err)
	}
	if sc.Subject != "42" || sc.Act.Sub != "1001" || sc.SID == "" || !sc.ExpiresAt.Equal(t0.Add(30*time.Minute)) {
		t.Errorf("session claims = %+v", sc)
	}
	wantEvents := []audit.Event{{Type: audit.Redeemed, Actor: ada, Subject: u42, Reason: "ticket 1234", Scope: "full", TokenID: jti,
		IP: "192.0.2.1", UserAgent: "test-browser"}}
	got := w.events()
	if diff := cmp.Diff(wantEvents, got, ignoreVolatile); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if len(got) == 1 && got[0].SessionID != sc.SID {
		t.Errorf("redeemed event session %q, cookie's sid %q", got[0].SessionID, sc.SID)
	}
}

func TestLoginFormRedirectDelivery(t *testing.T) {
	for _, tc := range []struct {
		publicURL, name string
		secure          bool
	}{
		{"http://imp.test", "impersonation_session", false},
		{"https://imp.test", "__Host-impersonation_session", true},
	} {
		t.Run(tc.publicURL, func(t *testing.T) {
			_, url := redistest.EmbeddedURL(t)
			w := newWorld(t, url, map[string]string{"IMPERSONATOR_DELIVERY": "redirect", "IMPERSONATOR_PUBLIC_URL": tc.publicURL})
			raw, _ := w.mint()
			rec := loginForm(w.instance(), raw)
			if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "http://app.test" {
				t.Fatalf("answer = %d to %q, want 303 to the app", rec.Code, rec.Header().Get("Location"))
			}
			c := sessionCookie(t, rec)
			if c.Name != tc.name || c.Secure != tc.secure || c.SameSite != http.SameSiteLaxMode || !c.HttpOnly || c.Path != "/" {
				t.Errorf("cookie = %+v, want %s, Secure=%v, SameSite=Lax, HttpOnly, Path=/", c, tc.name, tc.secure)
			}
		})
	}
}

// TestLoginRejections: each cause is audited precisely; the client always
// gets the same 401.
func TestLoginRejections(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, map[string]string{"IMPERSONATOR_LOGIN_RATE": "0"})
	h := w.instance()
	cfg := w.config()
	other := newWorld(t, url, nil) // another deployment's keys
	replayed, replayedJTI := w.mint()
	if rec := loginJSON(h, replayed); rec.Code != 200 {
		t.Fatal(rec.Code)
	}
	c := token.Claims{Act: token.Actor{Sub: ada.ID, Email: ada.Email}, Collection: "users"}
	c.Subject = "42"
	neverReserved, nr, _ := token.NewIssuer(w.keys, cfg.PublicURL, cfg.Audience, w.clock).Issue(token.Impersonation, c, time.Minute)
	expired, _ := w.mint()
	c.SID = "s"
	sessionTok, _, _ := token.NewIssuer(w.keys, cfg.PublicURL, cfg.Audience, w.clock).Issue(token.Session, c, time.Minute)
	foreign, _, _ := token.NewIssuer(other.keys, cfg.PublicURL, cfg.Audience, w.clock).Issue(token.Impersonation, c, time.Minute)
	good, _ := w.mint()
	tampered := good[:len(good)-4] + "AAAA"

	claimsEvent := func(jti, detail string) audit.Event {
		return audit.Event{Type: audit.Rejected, Actor: audit.Actor{ID: ada.ID, Email: ada.Email}, Subject: u42, Scope: "full", TokenID: jti,
			IP: "192.0.2.1", UserAgent: "test-browser", Detail: detail}
	}
	bare := func(detailPrefix string) audit.Event {
		return audit.Event{Type: audit.Rejected, IP: "192.0.2.1", UserAgent: "test-browser", Detail: detailPrefix}
	}
	replayEvent := claimsEvent(replayedJTI, "replayed: token already redeemed")
	replayEvent.Actor, replayEvent.Reason = ada, "ticket 1234"

	for _, tc := range []struct {
		name    string
		send    func() *httptest.ResponseRecorder
		advance time.Duration
		want    audit.Event
	}{
		{"replayed", func() *httptest.ResponseRecorder { return loginJSON(h, replayed) }, 0, replayEvent},
		{"never reserved", func() *httptest.ResponseRecorder { return loginJSON(h, neverReserved) }, 0,
			claimsEvent(nr.ID, "unknown token id: never minted here, or expired in the store")},
		{"bad signature", func() *httptest.ResponseRecorder { return loginJSON(h, tampered) }, 0, bare("invalid token: bad signature")},
		{"session token as impersonation token", func() *httptest.ResponseRecorder { return loginJSON(h, sessionTok) }, 0, bare("invalid token: wrong token type")},
		{"unknown key", func() *httptest.ResponseRecorder { return loginJSON(h, foreign) }, 0, bare("invalid token: unknown key")},
		{"garbage", func() *httptest.ResponseRecorder { return loginJSON(h, "not-a-token") }, 0, bare("invalid token: malformed token")},
		{"no token", func() *httptest.ResponseRecorder { return loginJSON(h, "") }, 0, bare("malformed request: no token")},
		{"form without token", func() *httptest.ResponseRecorder { return loginForm(h, "") }, 0, bare("malformed request: no token")},
		{"text/plain body", func() *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(good))
			req.Header.Set("Content-Type", "text/plain")
			req.Header.Set("User-Agent", "test-browser")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec
		}, 0, bare(`malformed request: content type "text/plain" is neither JSON nor a form`)},
		{"expired", func() *httptest.ResponseRecorder { return loginJSON(h, expired) }, 2 * time.Minute, bare("invalid token: expired")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(w.events())
			w.advance(tc.advance)
			rec := tc.send()
			if rec.Code != 401 || rec.Body.String() != `{"error":"invalid_token"}`+"\n" {
				t.Fatalf("answer = %d %s, want 401 invalid_token", rec.Code, rec.Body.String())
			}
			if len(rec.Result().Cookies()) != 0 {
				t.Error("a refused login set a cookie")
			}
			evs := w.events()[before:]
			if len(evs) != 1 {
				t.Fatalf("%d events, want 1 rejected event: %+v", len(evs), evs)
			}
			got := evs[0]
			if !strings.HasPrefix(got.Detail, tc.want.Detail) {
				t.Errorf("detail = %q, want it to start with %q", got.Detail, tc.want.Detail)
			}
			got.Detail = tc.want.Detail
			if diff := cmp.Diff(tc.want, got, ignoreVolatile); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoginRateLimit: failed redemptions from one client are counted and
// checked in one step (exactly the limit gets through, however concurrent),
// IPv6 clients by /64, Retry-After is the time left; and a validly signed
// token is never refused by the limiter, so junk cannot lock anyone out.
func TestLoginRateLimit(t *testing.T) {
	m, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, map[string]string{"IMPERSONATOR_LOGIN_RATE": "5/m"})
	h := w.instance()
	from := func(ip, tok string) *httptest.ResponseRecorder {
		body, _ := json.Marshal(map[string]string{"token": tok})
		req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = ip
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	var wg sync.WaitGroup
	var refused, failed atomic.Int32
	for range 20 {
		wg.Go(func() {
			switch from("192.0.2.1:1", "garbage.token.here").Code {
			case 401:
				failed.Add(1)
			case 429:
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 5 || refused.Load() != 15 {
		t.Fatalf("20 concurrent failures, limit 5/m: %d got 401, %d got 429; want exactly 5 and 15", failed.Load(), refused.Load())
	}
	if n := len(w.events()); n != 5 {
		t.Errorf("%d rejected events, want 5: past the limit failures are logged, not audited", n)
	}
	raw, _ := w.mint()
	if rec := from("192.0.2.1:1", raw); rec.Code != 200 {
		t.Fatalf("a valid token from the locked-out IP: %d, want 200 (never refused by the limiter)", rec.Code)
	}
	m.FastForward(20 * time.Second)
	rec := from("192.0.2.1:1", "garbage.token.here")
	if ra := rec.Header().Get("Retry-After"); rec.Code != 429 || ra != "40" {
		t.Errorf("20 s into the window: %d, Retry-After %q; want 429 with 40 (the time left)", rec.Code, ra)
	}
	// IPv6: one client holds a /64.
	for i := range 5 {
		from(fmt.Sprintf("[2001:db8::%x]:1", i+1), "garbage.token.here")
	}
	if rec := from("[2001:db8::ffff]:1", "garbage.token.here"); rec.Code != 429 {
		t.Errorf("another address in the same /64: %d, want 429", rec.Code)
	}
	if rec := from("[2001:db8:0:1::1]:1", "garbage.token.here"); rec.Code != 401 {
		t.Errorf("another /64: %d, want 401", rec.Code)
	}
	m.FastForward(61 * time.Second)
	if rec := from("192.0.2.1:1", "garbage.token.here"); rec.Code != 401 {
		t.Errorf("after the window: %d, want 401", rec.Code)
	}
}

// TestRefusalsRecordedWhenTheClientLeaves: a client that disconnects after
// sending still leaves its rejected event and its failure count.
func TestRefusalsRecordedWhenTheClientLeaves(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, map[string]string{"IMPERSONATOR_LOGIN_RATE": "1/m"})
	h := w.instance()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(`{"token":"garbage.token.here"}`)).WithContext(ctx)
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(httptest.NewRecorder(), req)
	evs := w.events()
	if len(evs) != 1 || evs[0].Type != audit.Rejected {
		t.Fatalf("events after a refusal whose client left = %+v, want one impersonation.rejected", evs)
	}
	if rec := loginJSON(h, "garbage.token.here"); rec.Code != 429 {
		t.Errorf("next failure: %d, want 429: the departed client's failure was counted", rec.Code)
	}
}

// TestLoginCSRF: a form login from another site is refused before the
// token is read (it stays redeemable); a logout from another site leaves
// the session alive.
func TestLoginCSRF(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, map[string]string{"IMPERSONATOR_DELIVERY": "redirect"})
	h := w.instance()
	raw, _ := w.mint()
	for name, hdr := range map[string]map[string]string{
		"foreign Origin":           {"Origin": "https://attacker.example"},
		"cross-site, no Origin":    {"Sec-Fetch-Site": "cross-site"},
		"no Origin, no fetch site": {},
		"null Origin":              {"Origin": "null"},
	} {
		req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(url2form(raw)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 403 || len(rec.Result().Cookies()) != 0 {
			t.Errorf("%s: %d with %d cookies, want 403 and none", name, rec.Code, len(rec.Result().Cookies()))
		}
	}
	same := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(url2form(raw)))
	same.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	same.Header.Set("Sec-Fetch-Site", "same-origin")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, same)
	if rec.Code != 303 {
		t.Fatalf("same-origin form login after the refusals: %d, want 303 (the token was left unredeemed)", rec.Code)
	}
	c := sessionCookie(t, rec)
	logout := func(origin string) int {
		req := httptest.NewRequest(http.MethodPost, "/impersonation/logout", nil)
		req.AddCookie(c)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := logout("https://attacker.example"); code != 403 {
		t.Errorf("logout from a foreign origin: %d, want 403", code)
	}
	if rec := get(h, "/impersonation/session", c); rec.Code != 200 {
		t.Fatalf("the session died from a foreign logout: %d", rec.Code)
	}
	if code := logout("http://app.test"); code != 204 {
		t.Errorf("logout from the app: %d, want 204", code)
	}
	if rec := get(h, "/impersonation/session", c); rec.Code != 401 {
		t.Errorf("after the app's logout: %d, want 401", rec.Code)
	}
}

func url2form(tok string) string { return "token=" + tok }

func login(t *testing.T, w *world, h http.Handler) *http.Cookie {
	t.Helper()
	raw, _ := w.mint()
	rec := loginJSON(h, raw)
	if rec.Code != 200 {
		t.Fatalf("login: %d %s", rec.Code, rec.Body.String())
	}
	return sessionCookie(t, rec)
}

func TestSessionEndpoint(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, nil)
	h := w.instance()
	c := login(t, w, h)
	rec := get(h, "/impersonation/session", c)
	if rec.Code != 200 {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	sid, _ := got["session_id"].(string)
	want := map[string]any{"session_id": sid, "subject": "42", "collection": "users",
		"actor": map[string]any{"id": "1001", "email": "ada@example.com"}, "reason": "ticket 1234",
		"started_at": "2026-11-25T10:00:00Z", "expires_at": "2026-11-25T10:30:00Z", "scope": "full"}
	if diff := cmp.Diff(want, got); diff != "" || sid == "" {
		t.Errorf("session (-want +got):\n%s", diff)
	}
	if rec.Header().Get("X-Impersonation-Subject") != "42" || rec.Header().Get("X-Impersonation-Actor") != "ada@example.com" {
		t.Errorf("forward-auth headers = %q, %q", rec.Header().Get("X-Impersonation-Subject"), rec.Header().Get("X-Impersonation-Actor"))
	}
	raw, _ := w.mint()
	for name, ck := range map[string]*http.Cookie{
		"no cookie":                     nil,
		"garbage cookie":                {Name: "impersonation_session", Value: "x.y.z"},
		"impersonation token as cookie": {Name: "impersonation_session", Value: raw},
		"cookie under another name":     {Name: "session", Value: c.Value},
	} {
		if rec := get(h, "/impersonation/session", ck); rec.Code != 401 || rec.Header().Get("X-Impersonation-Subject") != "" {
			t.Errorf("%s: status %d (subject header %q), want 401 without headers", name, rec.Code, rec.Header().Get("X-Impersonation-Subject"))
		}
	}
}

// TestIdleAndCap moves the clock: a session survives activity within the
// idle timeout, ends after it, and ends at its cap however busy it is; each
// end is audited once.
func TestIdleAndCap(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, nil) // idle 10m, cap 30m
	h := w.instance()
	c := login(t, w, h)
	if rec := get(h, "/impersonation/session", c); rec.Code != 200 { // the app's first request
		t.Fatalf("at once: %d, want 200", rec.Code)
	}
	w.advance(9 * time.Minute)
	if rec := get(h, "/impersonation/session", c); rec.Code != 200 {
		t.Fatalf("9m idle: %d, want 200", rec.Code)
	}
	w.advance(10*time.Minute + time.Second)
	if rec := get(h, "/impersonation/session", c); rec.Code != 401 {
		t.Fatalf("10m01s idle: %d, want 401", rec.Code)
	}
	busy := login(t, w, h)
	get(h, "/impersonation/session", busy)
	for range 3 {
		w.advance(9*time.Minute + 50*time.Second)
		if rec := get(h, "/impersonation/session", busy); rec.Code != 200 {
			t.Fatalf("busy session at %v: %d, want 200", w.clock().Sub(t0), rec.Code)
		}
	}
	w.advance(31 * time.Second) // 30m01s after it started: the cookie is within its leeway, the record past its cap
	if rec := get(h, "/impersonation/session", busy); rec.Code != 401 {
		t.Fatalf("past the cap: %d, want 401", rec.Code)
	}
	var ended []string
	for _, e := range w.events() {
		if e.Type == audit.Ended {
			ended = append(ended, e.Detail)
		}
	}
	if diff := cmp.Diff([]string{"idle timeout", "reached its absolute cap"}, ended); diff != "" {
		t.Errorf("session.ended details (-want +got):\n%s", diff)
	}
}

// TestLogoutAndRevocationAcrossInstances: the cookie stops working at once,
// on the instance that ended it and on another one that had verified (and
// cached) the same cookie.
func TestLogoutAndRevocationAcrossInstances(t *testing.T) {
	srv := redistest.StartServer(t)
	w := newWorld(t, srv.URL(), nil)
	a, b := w.instance(), w.instance()

	c := login(t, w, a)
	for _, h := range []http.Handler{a, b} {
		if rec := get(h, "/impersonation/session", c); rec.Code != 200 {
			t.Fatalf("before logout: %d", rec.Code)
		}
	}
	rec := do(a, http.MethodPost, "/impersonation/logout", c, "")
	if rec.Code != 204 {
		t.Fatalf("logout: %d, want 204", rec.Code)
	}
	if cleared := sessionCookie(t, rec); cleared.MaxAge >= 0 || cleared.Value != "" {
		t.Errorf("logout cookie = %+v, want it cleared", cleared)
	}
	for name, h := range map[string]http.Handler{"same instance": a, "other instance": b} {
		if rec := get(h, "/impersonation/session", c); rec.Code != 401 {
			t.Errorf("after logout, %s: %d, want 401", name, rec.Code)
		}
	}

	c2 := login(t, w, a)
	if rec := get(b, "/impersonation/session", c2); rec.Code != 200 {
		t.Fatal(rec.Code)
	}
	list := do(b, http.MethodGet, "/v1/sessions", nil, adminToken)
	var l struct {
		Sessions []struct {
			ID    string      `json:"id"`
			Actor audit.Actor `json:"actor"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal(list.Body.Bytes(), &l); err != nil || len(l.Sessions) != 1 || l.Sessions[0].Actor != ada {
		t.Fatalf("GET /v1/sessions = %s (%v), want the one live session", list.Body.String(), err)
	}
	if rec := do(b, http.MethodDelete, "/v1/sessions/"+l.Sessions[0].ID, nil, ""); rec.Code != 401 {
		t.Errorf("revoke without the admin token: %d, want 401", rec.Code)
	}
	if rec := do(b, http.MethodDelete, "/v1/sessions/"+l.Sessions[0].ID, nil, adminToken); rec.Code != 204 {
		t.Fatalf("revoke: %d, want 204", rec.Code)
	}
	if rec := do(b, http.MethodDelete, "/v1/sessions/"+l.Sessions[0].ID, nil, adminToken); rec.Code != 404 {
		t.Errorf("revoke again: %d, want 404", rec.Code)
	}
	for name, h := range map[string]http.Handler{"revoking instance": b, "login instance": a} {
		if rec := get(h, "/impersonation/session", c2); rec.Code != 401 {
			t.Errorf("after revocation, %s: %d, want 401", name, rec.Code)
		}
	}

	login(t, w, a)
	login(t, w, b)
	rec = do(a, http.MethodDelete, "/v1/sessions?actor=1001", nil, adminToken)
	if rec.Code != 200 || rec.Body.String() != `{"revoked":2}`+"\n" {
		t.Errorf("revoke all of admin 1001: %d %s, want 200 {\"revoked\":2}", rec.Code, rec.Body.String())
	}
	counts := map[audit.Type]int{}
	for _, e := range w.events() {
		counts[e.Type]++
		if e.Type == audit.Revoked && !strings.Contains(e.Detail, "admin API token:") {
			t.Errorf("revocation detail %q does not name the admin API caller", e.Detail)
		}
		if e.Actor.ID != ada.ID || e.Subject != u42 {
			t.Errorf("%s event without the impersonation's actor and subject: %+v", e.Type, e)
		}
	}
	want := map[audit.Type]int{audit.Redeemed: 4, audit.Ended: 1, audit.Revoked: 3}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("event counts (-want +got):\n%s", diff)
	}
}

// TestConcurrentRedemptions: 200 simultaneous redemptions of one token,
// across two instances on one real redis-server, give exactly one session.
func TestConcurrentRedemptions(t *testing.T) {
	srv := redistest.StartServer(t)
	w := newWorld(t, srv.URL(), map[string]string{"IMPERSONATOR_LOGIN_RATE": "0"})
	instances := []http.Handler{w.instance(), w.instance()}
	raw, _ := w.mint()
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 200 {
		wg.Go(func() {
			<-start
			switch rec := loginJSON(instances[i%2], raw); rec.Code {
			case 200:
				ok.Add(1)
			case 401:
				refused.Add(1)
			default:
				t.Errorf("status %d", rec.Code)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok.Load() != 1 || refused.Load() != 199 {
		t.Fatalf("%d logins succeeded and %d were refused, want 1 and 199", ok.Load(), refused.Load())
	}
	sessions, err := w.store().Sessions(context.Background(), "")
	if err != nil || len(sessions) != 1 {
		t.Fatalf("%d sessions (%v), want exactly 1", len(sessions), err)
	}
	counts := map[audit.Type]int{}
	for _, e := range w.events() {
		counts[e.Type]++
	}
	// The 199 replays are one admin's: their events fold (at most 10 a
	// minute, the rest counted in a summary at the next window).
	if counts[audit.Redeemed] != 1 || counts[audit.Rejected] != 10 {
		t.Errorf("events = %v, want 1 redeemed and 10 rejected (the rest folded)", counts)
	}
}

// TestRedisDown: login and session fail closed (503) while Redis is down.
func TestRedisDown(t *testing.T) {
	srv := redistest.StartServer(t)
	w := newWorld(t, srv.URL()+"?max_retries=-1&dial_timeout=200ms", nil)
	h := w.instance()
	c := login(t, w, h)
	raw, _ := w.mint()
	srv.Stop()
	if rec := loginJSON(h, raw); rec.Code != 503 || len(rec.Result().Cookies()) != 0 {
		t.Errorf("login with Redis down: %d with %d cookies, want 503 and none", rec.Code, len(rec.Result().Cookies()))
	}
	if rec := get(h, "/impersonation/session", c); rec.Code != 503 {
		t.Errorf("session with Redis down: %d, want 503", rec.Code)
	}
}

func TestStartPageHeaders(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	h := newWorld(t, url, nil).instance()
	rec := get(h, "/impersonation/start", nil)
	for k, want := range map[string]string{
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; form-action 'self' http://app.test; base-uri 'none'; frame-ancestors 'none'",
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if strings.Contains(rec.Body.String(), "<script>") {
		t.Error("the start page has an inline script")
	}
}

// TestOriginSpellings: the public URL configured in another spelling of
// the same origin (case, default port, trailing slash) still accepts its own
// start page's form login, and a look-alike host is still refused.
func TestOriginSpellings(t *testing.T) {
	_, url := redistest.EmbeddedURL(t)
	w := newWorld(t, url, map[string]string{"IMPERSONATOR_DELIVERY": "redirect", "IMPERSONATOR_PUBLIC_URL": "https://Imp.Test:443/"})
	h := w.instance()
	post := func(origin string) int {
		raw, _ := w.mint()
		req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(url2form(raw)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := post("https://imp.test"); code != 303 {
		t.Errorf("the start page's own origin: %d, want 303", code)
	}
	for _, o := range []string{"https://imp.test.evil.example", "http://imp.test", "https://imp.test:8443"} {
		if code := post(o); code != 403 {
			t.Errorf("origin %s: %d, want 403", o, code)
		}
	}
}
