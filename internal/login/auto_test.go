package login_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
)

const forestSecret = "login-test-forest-secret-0123456789abcdefgh"

// mintAuto runs the Forest action on h in auto delivery and returns its two
// credentials: W from the webhook body, R from redirectTo's fragment.
func (w *world) mintAuto(h http.Handler) (wTok, rTok string) {
	w.t.Helper()
	bearer, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"id": 1001, "email": "ada@example.com", "team": "Support", "role": "Admin", "exp": w.clock().Add(time.Hour).Unix(),
	}).SignedString([]byte(forestSecret))
	if err != nil {
		w.t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/forest/actions/impersonate", strings.NewReader(
		`{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],"values":{"Reason":"ticket 1234"},"smart_action_id":"users-impersonate"}}}`))
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var a struct {
		Webhook struct {
			Body struct{ Token string } `json:"body"`
		} `json:"webhook"`
		RedirectTo string `json:"redirectTo"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &a) != nil {
		w.t.Fatalf("mint: %d %s", rec.Code, rec.Body.String())
	}
	prefix := "http://imp.test/impersonation/start#token="
	if !strings.HasPrefix(a.RedirectTo, prefix) || a.Webhook.Body.Token == "" {
		w.t.Fatalf("auto answer = %s, want a webhook token and redirectTo the start page", rec.Body.String())
	}
	return a.Webhook.Body.Token, strings.TrimPrefix(a.RedirectTo, prefix)
}

// startPage posts R as the start page does (a first-party form), with the
// cookie the browser holds, if any.
func startPage(h http.Handler, r string, c *http.Cookie) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/impersonation/login", strings.NewReader(url.Values{"token": {r}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://imp.test")
	req.Header.Set("User-Agent", "test-browser")
	if c != nil {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func (w *world) live(t *testing.T) int {
	t.Helper()
	list, err := w.store().Sessions(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

type step struct{ Type, Detail string }

func (w *world) steps() []step {
	var out []step
	for _, e := range w.events() {
		out = append(out, step{string(e.Type), e.Detail})
	}
	return out
}

// TestAutoDelivery: the grant's two credentials, in every order the
// browser and the panel can produce, give at most one live session, and
// each step is an audit event saying which credential and which case.
func TestAutoDelivery(t *testing.T) {
	env := map[string]string{"IMPERSONATOR_DELIVERY": "auto", "FOREST_AUTH_SECRET": forestSecret}
	t.Run("webhook cookie kept: the redirect credential is not needed", func(t *testing.T) {
		_, u := redistest.EmbeddedURL(t)
		w := newWorld(t, u, env)
		h := w.instance()
		wt, rt := w.mintAuto(h)
		c := sessionCookie(t, loginJSON(h, wt))
		rec := startPage(h, rt, c)
		if rec.Code != 303 || len(rec.Result().Cookies()) != 0 {
			t.Fatalf("start page with the cookie: %d, %d cookies; want 303 to the app and no new cookie", rec.Code, len(rec.Result().Cookies()))
		}
		if got := get(h, "/impersonation/session", c); got.Code != 200 {
			t.Errorf("the kept session: %d, want 200", got.Code)
		}
		want := []step{{"impersonation.redeemed", "webhook credential"}, {"impersonation.rejected", "redirect credential not needed: the webhook's cookie was kept"}}
		if diff := cmp.Diff(want, w.steps()); diff != "" || w.live(t) != 1 {
			t.Errorf("%d live sessions; events (-want +got):\n%s", w.live(t), diff)
		}
	})
	t.Run("webhook cookie dropped: the redirect credential supersedes it", func(t *testing.T) {
		_, u := redistest.EmbeddedURL(t)
		w := newWorld(t, u, env)
		h := w.instance()
		wt, rt := w.mintAuto(h)
		dropped := sessionCookie(t, loginJSON(h, wt)) // the browser blocks it
		rec := startPage(h, rt, nil)
		if rec.Code != 303 {
			t.Fatalf("start page without the cookie: %d, want 303", rec.Code)
		}
		c := sessionCookie(t, rec)
		if got := get(h, "/impersonation/session", c); got.Code != 200 {
			t.Errorf("the first-party session: %d, want 200", got.Code)
		}
		if got := get(h, "/impersonation/session", dropped); got.Code != 401 {
			t.Errorf("the superseded webhook session: %d, want 401", got.Code)
		}
		want := []step{
			{"impersonation.redeemed", "webhook credential"},
			{"session.ended", "superseded: the browser did not keep the webhook's cookie"},
			{"impersonation.redeemed", "redirect credential: the browser did not keep the webhook's cookie; its session was superseded"},
		}
		if diff := cmp.Diff(want, w.steps()); diff != "" || w.live(t) != 1 {
			t.Errorf("%d live sessions; events (-want +got):\n%s", w.live(t), diff)
		}
	})
	t.Run("tab opened before the webhook: the webhook credential is refused", func(t *testing.T) {
		_, u := redistest.EmbeddedURL(t)
		w := newWorld(t, u, env)
		h := w.instance()
		wt, rt := w.mintAuto(h)
		c := sessionCookie(t, startPage(h, rt, nil))
		if rec := loginJSON(h, wt); rec.Code != 401 {
			t.Errorf("webhook after the first-party session: %d, want 401", rec.Code)
		}
		if got := get(h, "/impersonation/session", c); got.Code != 200 {
			t.Errorf("the first-party session: %d, want 200", got.Code)
		}
		want := []step{
			{"impersonation.redeemed", "redirect credential"},
			{"impersonation.rejected", "webhook credential refused: the grant's session was opened first-party (redirect credential) already"},
		}
		if diff := cmp.Diff(want, w.steps()); diff != "" || w.live(t) != 1 {
			t.Errorf("%d live sessions; events (-want +got):\n%s", w.live(t), diff)
		}
	})
	t.Run("both at once, many times: never two live sessions", func(t *testing.T) {
		w := newWorld(t, redistest.StartServer(t).URL(), env)
		a, b := w.instance(), w.instance()
		for range 30 {
			wt, rt := w.mintAuto(a)
			var wg sync.WaitGroup
			wg.Go(func() { loginJSON(a, wt) })
			wg.Go(func() { startPage(b, rt, nil) })
			wg.Wait()
		}
		if n := w.live(t); n != 30 {
			t.Errorf("%d live sessions for 30 grants, want exactly one each", n)
		}
		redeemed, ended := 0, 0
		for _, e := range w.events() {
			switch e.Type {
			case audit.Redeemed:
				redeemed++
			case audit.Ended:
				ended++
			}
		}
		if redeemed-ended != 30 {
			t.Errorf("%d redeemed and %d ended: %d sessions opened and not ended, want 30", redeemed, ended, redeemed-ended)
		}
	})
}
