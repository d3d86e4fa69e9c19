package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// TestEndToEnd is the whole chain through run, as `make run` starts it (the
// embedded Redis), driven only over HTTP as the Forest UI, the browser, the
// customer app and a reviewer would: mint, log in, check the session,
// replay, log out, read the audit log and verify it.
func TestEndToEnd(t *testing.T) {
	const admin = "e2e-admin-token-0123456789abcdefghijklmnop"
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(100) // Go's default: an earlier serve in this process set it
	}
	gcBefore := gcPercent()
	base, _ := startServe(t, map[string]string{
		"IMPERSONATOR_KEYS_DIR":            t.TempDir() + "/keys",
		"FOREST_AUTH_SECRET":               forestSecret,
		"IMPERSONATOR_ADMIN_TOKENS":        admin,
		"IMPERSONATOR_CHECKPOINT_INTERVAL": "1s",
	})
	call := func(method, path string, body string, hdr map[string]string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, string(b)
	}

	// serve sets the collector's target unless GOGC was set (README,
	// Performance).
	if _, set := os.LookupEnv("GOGC"); !set {
		if got := gcPercent(); got != serveGOGC {
			t.Errorf("GC percent while serving = %d, want %d", got, serveGOGC)
		}
	} else if got := gcPercent(); got != gcBefore {
		t.Errorf("GOGC is set, yet serve changed the GC percent from %d to %d", gcBefore, got)
	}

	tok := mint(t, base, "42")
	cookie := login(t, base, tok)
	withCookie := map[string]string{"Cookie": cookie.Name + "=" + cookie.Value}

	code, hdr, body := call("GET", "/impersonation/session", "", withCookie)
	if code != 200 || hdr.Get("X-Impersonation-Subject") != "42" || hdr.Get("X-Impersonation-Actor") != "ada@example.com" {
		t.Fatalf("session = %d %v %s", code, hdr, body)
	}
	if code, _, body := call("POST", "/impersonation/login", `{"token":"`+tok+`"}`, map[string]string{"Content-Type": "application/json"}); code != 401 || !strings.Contains(body, "invalid_token") {
		t.Errorf("replay = %d %s, want 401 invalid_token", code, body)
	}
	if code, _, _ := call("POST", "/impersonation/logout", "", withCookie); code != 204 {
		t.Errorf("logout = %d, want 204", code)
	}
	if code, _, _ := call("GET", "/impersonation/session", "", withCookie); code != 401 {
		t.Errorf("session after logout = %d, want 401", code)
	}

	bearer := map[string]string{"Authorization": "Bearer " + admin}
	code, _, body = call("GET", "/v1/audit/events?subject=users:42", "", bearer)
	var page struct {
		Events []struct{ Type, Detail string } `json:"events"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &page) != nil {
		t.Fatalf("audit events = %d %s", code, body)
	}
	var types []string
	for _, e := range page.Events {
		types = append(types, e.Type)
	}
	want := "session.ended impersonation.rejected impersonation.redeemed impersonation.minted"
	if strings.Join(types, " ") != want {
		t.Errorf("audit of users:42, newest first = %v, want %s", types, want)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _, body = call("GET", "/v1/audit/verify", "", bearer)
		if code == 200 && strings.Contains(body, `"ok":true`) && strings.Contains(body, `"events_verified":4`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify never covered the 4 events: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMetricsListener: with IMPERSONATOR_METRICS_LISTEN, /metrics is served
// there and not on the browser-facing listener.
func TestMetricsListener(t *testing.T) {
	addrs := make(chan [2]string, 2)
	ctx, cancel := context.WithCancel(withListening(context.Background(), func(name, addr string) { addrs <- [2]string{name, addr} }))
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, env(map[string]string{
			"IMPERSONATOR_LISTEN": "127.0.0.1:0", "IMPERSONATOR_METRICS_LISTEN": "127.0.0.1:0",
			"IMPERSONATOR_KEYS_DIR": t.TempDir() + "/keys", "IMPERSONATOR_SHUTDOWN_DRAIN": "0s",
		}), io.Discard, io.Discard)
	}()
	exited := false
	defer func() {
		cancel()
		if !exited {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}()
	got := map[string]string{}
	for len(got) < 2 {
		select {
		case a := <-addrs:
			got[a[0]] = a[1]
		case err := <-done:
			exited = true
			t.Fatalf("serve exited: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("serve did not listen")
		}
	}
	if code := getJSON(t, "http://"+got["http"]+"/metrics", nil); code != 404 {
		t.Errorf("/metrics on the public listener = %d, want 404", code)
	}
	res, err := http.Get("http://" + got["metrics"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), "impersonator_audit_integrity_alarm") {
		t.Errorf("/metrics on its own listener = %d, %d bytes", res.StatusCode, len(b))
	}
}

// TestNotificationsThroughServe: serve with IMPERSONATOR_NOTIFY_URLS POSTs
// each audit event to the receiver, signed per Standard Webhooks (checked
// with the official library), off the request path.
func TestNotificationsThroughServe(t *testing.T) {
	const secret = "notify-secret-0123456789abcdefghijklmnopqrstuv"
	wh, err := standardwebhooks.NewWebhookRaw([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := wh.Verify(body, r.Header); err != nil {
			t.Errorf("signature: %v", err)
			w.WriteHeader(400)
			return
		}
		var m struct{ Type string }
		json.Unmarshal(body, &m)
		got <- m.Type
	}))
	defer recv.Close()
	base, _ := startServe(t, map[string]string{
		"IMPERSONATOR_KEYS_DIR": t.TempDir() + "/keys", "FOREST_AUTH_SECRET": forestSecret,
		"IMPERSONATOR_NOTIFY_URLS": recv.URL, "IMPERSONATOR_NOTIFY_SECRET": secret,
		"IMPERSONATOR_NOTIFY_EVENTS": "impersonation.minted,impersonation.redeemed",
	})
	login(t, base, mint(t, base, "42"))
	var types []string
	for len(types) < 2 {
		select {
		case typ := <-got:
			types = append(types, typ)
		case <-time.After(15 * time.Second):
			t.Fatalf("received %v, want minted and redeemed", types)
		}
	}
	slices.Sort(types) // deliveries run in parallel: any order
	if strings.Join(types, " ") != "impersonation.minted impersonation.redeemed" {
		t.Errorf("received %v", types)
	}
}

// gcPercent reads the collector's target (SetGCPercent has no getter).
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}
