// Command demo walks one impersonation end to end against a real instance
// of the service (embedded Redis, a fresh key), playing the Forest UI, the
// support person's browser and the customer app, and prints each step and
// the audit log. Run it with `make demo`.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/app"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
)

// randomSecret is a secret made for this run: the demo has no fixed one.
func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	forestSecret, adminToken := randomSecret(), randomSecret()
	dir, err := os.MkdirTemp("", "impersonator-demo-keys")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	env := map[string]string{"FOREST_AUTH_SECRET": forestSecret, "IMPERSONATOR_PUBLIC_URL": base, "IMPERSONATOR_APP_URL": "http://app.localhost",
		"IMPERSONATOR_ADMIN_TOKENS": adminToken, "IMPERSONATOR_KEYS_DIR": dir, "IMPERSONATOR_SHUTDOWN_DRAIN": "0s"}
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		ln.Close()
		return err
	}
	service, err := app.New(ctx, cfg, app.Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		ln.Close()
		return err
	}
	defer service.Close()
	served := make(chan error, 1)
	go func() { served <- service.Serve(ctx, ln, nil) }()
	defer func() { cancel(); <-served }()
	st, keys := service.Store(), service.Keys()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	step := func(n int, what string) { fmt.Fprintf(out, "\n%d. %s\n", n, what) }

	step(1, "The Forest UI runs the Impersonate action on users 42 with a reason")
	admin, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"id": 1001, "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "team": "Support", "role": "Admin",
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(forestSecret))
	body := `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],"values":{"Reason":"ticket 1234: customer cannot see invoices"}}}}`
	req, _ := http.NewRequest(http.MethodPost, base+"/forest/actions/impersonate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	res, answer, err := do(browser, req)
	if err != nil {
		return err
	}
	var minted struct {
		Webhook struct {
			URL  string `json:"url"`
			Body struct {
				Token string `json:"token"`
			} `json:"body"`
		} `json:"webhook"`
		Success string `json:"success"`
	}
	if err := json.Unmarshal(answer, &minted); err != nil || minted.Webhook.Body.Token == "" {
		return fmt.Errorf("mint answered %d %s", res.StatusCode, answer)
	}
	tok := minted.Webhook.Body.Token
	fmt.Fprintf(out, "   %d %q, webhook %s with a %d-byte token valid %s, usable once\n", res.StatusCode, minted.Success, minted.Webhook.URL, len(tok), cfg.TokenTTL)

	login := func() (*http.Response, []byte, error) {
		req, _ := http.NewRequest(http.MethodPost, minted.Webhook.URL, strings.NewReader(`{"token":"`+tok+`"}`))
		req.Header.Set("Content-Type", "application/json")
		return do(browser, req)
	}
	step(2, "The browser posts the token to the login endpoint")
	res, answer, err = login()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   %d %s", res.StatusCode, answer)
	for _, c := range res.Cookies() {
		fmt.Fprintf(out, "   cookie %s: HttpOnly=%v Secure=%v SameSite=%v, a session JWT any app can verify with %s/.well-known/jwks.json\n",
			c.Name, c.HttpOnly, c.Secure, sameSite(c.SameSite), base)
	}

	step(3, "The customer app asks who this is (forward-auth)")
	req, _ = http.NewRequest(http.MethodGet, base+"/impersonation/session", nil)
	sessionCheck := func() (*http.Response, []byte, error) {
		for _, c := range res.Cookies() {
			req.Header.Set("Cookie", c.Name+"="+c.Value)
		}
		return do(http.DefaultClient, req)
	}
	sres, sbody, err := sessionCheck()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   %d X-Impersonation-Subject=%s X-Impersonation-Actor=%s\n   %s", sres.StatusCode,
		sres.Header.Get("X-Impersonation-Subject"), sres.Header.Get("X-Impersonation-Actor"), sbody)

	step(4, "Someone replays the same token")
	rres, rbody, err := login()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   %d %s", rres.StatusCode, rbody)

	step(5, "The support person ends the session; the cookie stops working at once")
	req2, _ := http.NewRequest(http.MethodPost, base+"/impersonation/logout", nil)
	for _, c := range res.Cookies() {
		req2.Header.Set("Cookie", c.Name+"="+c.Value)
	}
	lres, _, err := do(http.DefaultClient, req2)
	if err != nil {
		return err
	}
	after, _, err := sessionCheck()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   logout %d, then the session endpoint answers %d\n", lres.StatusCode, after.StatusCode)

	step(6, "A read-only impersonation: the Forest UI chooses Access \"Read only\"")
	roBody := `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],"values":{"Reason":"ticket 1250: check the address shown","Access":"Read only"}}}}`
	req, _ = http.NewRequest(http.MethodPost, base+"/forest/actions/impersonate", strings.NewReader(roBody))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	res, answer, err = do(browser, req)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(answer, &minted); err != nil || minted.Webhook.Body.Token == "" {
		return fmt.Errorf("read-only mint answered %d %s", res.StatusCode, answer)
	}
	tok = minted.Webhook.Body.Token
	res, answer, err = login()
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("read-only login answered %d %s", res.StatusCode, answer)
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/impersonation/session", nil)
	sres, sbody, err = sessionCheck()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   %d X-Impersonation-Scope=%s\n   %s", sres.StatusCode, sres.Header.Get("X-Impersonation-Scope"), sbody)
	req.Header.Set("X-Forwarded-Method", http.MethodPost) // forward-auth of a change: refused
	wres, wbody, err := sessionCheck()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   forward-auth of a POST under read only: %d %s", wres.StatusCode, wbody)

	step(7, "The customer's history: who logged in as users 42, when, why, for how long")
	req, _ = http.NewRequest(http.MethodGet, base+"/v1/subjects/users/42/history", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	hres, hbody, err := do(http.DefaultClient, req)
	if err != nil {
		return err
	}
	var history audit.HistoryPage
	if err := json.Unmarshal(hbody, &history); err != nil {
		return fmt.Errorf("history answered %d %s", hres.StatusCode, hbody)
	}
	htw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(htw, "   STARTED\tENDED\tADMIN\tTEAM\tSCOPE\tREASON")
	for _, it := range history.Impersonations {
		ended := "live"
		if it.EndReason != nil {
			ended = *it.EndReason
		}
		fmt.Fprintf(htw, "   %s\t%s\t%s\t%s\t%s\t%s\n", it.StartedAt.Format(time.TimeOnly), ended, it.Actor.Name, it.Actor.Team, it.Scope, it.Reason)
	}
	htw.Flush()

	step(8, "The audit log: who impersonated whom, when, why, and what happened")
	log := audit.NewLog(st, time.Now)
	page, err := log.Query(ctx, audit.Filter{}, 20, "")
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   TYPE\tACTOR\tSUBJECT\tSCOPE\tREASON\tDETAIL")
	for i := len(page.Events) - 1; i >= 0; i-- {
		e := page.Events[i]
		fmt.Fprintf(tw, "   %s\t%s\t%s:%s\t%s\t%s\t%s\n", e.Type, e.Actor.Email, e.Subject.Collection, e.Subject.ID, e.Scope, e.Reason, e.Detail)
	}
	tw.Flush()
	if _, err := log.CatchUp(ctx, keys, 0); err != nil {
		return err
	}
	rep, err := log.Verify(ctx, keys, audit.VerifyOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   verify: ok=%v, %d events covered by %d signed checkpoint(s)\n", rep.OK, rep.Verified, rep.Checkpoints)
	return nil
}

func do(c *http.Client, req *http.Request) (*http.Response, []byte, error) {
	res, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, b, err
}

func sameSite(s http.SameSite) string {
	return map[http.SameSite]string{http.SameSiteNoneMode: "None", http.SameSiteLaxMode: "Lax", http.SameSiteStrictMode: "Strict"}[s]
}
