package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// TestNotifyTest: `impersonator notify test` sends one signed test event
// to each URL (checked with the official Standard Webhooks library, the
// secret given raw), prints each answer with the URL redacted, and fails
// when any URL did.
func TestNotifyTest(t *testing.T) {
	const secret = "notify-test-secret-0123456789abcdefgh"
	wh, err := standardwebhooks.NewWebhookRaw([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var problems []string
	var types []string
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if err := wh.Verify(body, r.Header); err != nil {
			problems = append(problems, err.Error())
		}
		var p struct{ Type string }
		_ = json.Unmarshal(body, &p)
		types = append(types, p.Type)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer ok.Close()
	var slackText string
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s struct{ Text string }
		_ = json.NewDecoder(r.Body).Decode(&s)
		mu.Lock()
		slackText = s.Text
		mu.Unlock()
	}))
	defer slack.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer down.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // connection refused

	vars := map[string]string{
		"IMPERSONATOR_NOTIFY_URLS":   ok.URL + "/hook?token=q," + "slack+" + slack.URL + "/services/T/B/X",
		"IMPERSONATOR_NOTIFY_SECRET": secret,
	}
	var out, errb bytes.Buffer
	if err := runNotify(context.Background(), []string{"test"}, env(vars), &out, &errb); err != nil {
		t.Fatalf("notify test with healthy URLs: %v\n%s", err, out.String())
	}
	mu.Lock()
	if len(problems) > 0 || len(types) != 1 || types[0] != "impersonator.notify.test" || !strings.Contains(slackText, "test notification") {
		t.Errorf("receivers saw problems %v, types %v, Slack text %q", problems, types, slackText)
	}
	mu.Unlock()
	if s := out.String(); !strings.Contains(s, "ok      http://127.0.0.1:") || !strings.Contains(s, "204 No Content") ||
		!strings.Contains(s, "slack+http://127.0.0.1:") || strings.Contains(s, "token=q") || strings.Contains(s, "/X") {
		t.Errorf("output:\n%s", s)
	}

	vars["IMPERSONATOR_NOTIFY_URLS"] = ok.URL + "," + down.URL + "," + gone.URL
	out.Reset()
	err = runNotify(context.Background(), []string{"test"}, env(vars), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "2 of 3 URLs failed") {
		t.Errorf("notify test with failing URLs = %v, want 2 of 3 failed", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "ok") || !strings.Contains(lines[2], "FAIL") ||
		!strings.Contains(lines[2], "HTTP 503 Service Unavailable") || !strings.Contains(lines[3], "FAIL") || !strings.Contains(lines[3], "refused") {
		t.Errorf("output:\n%s", out.String())
	}
	if strings.Contains(out.String(), "Post ") {
		t.Errorf("an error repeats the URL:\n%s", out.String())
	}

	for _, c := range []struct {
		args []string
		vars map[string]string
		want string
	}{
		{[]string{"test"}, map[string]string{}, "IMPERSONATOR_NOTIFY_URLS is not set"},
		{[]string{"test"}, map[string]string{"IMPERSONATOR_NOTIFY_URLS": ok.URL}, "IMPERSONATOR_NOTIFY_SECRET is required"},
		{[]string{"test", "extra"}, vars, "unexpected arguments"},
	} {
		if err := runNotify(context.Background(), c.args, env(c.vars), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("notify %v = %v, want %q", c.args, err, c.want)
		}
	}
	if err := runNotify(context.Background(), nil, env(vars), io.Discard, io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("notify without a subcommand = %v, want usage", err)
	}
	if err := runNotify(context.Background(), []string{"test", "--help"}, env(vars), io.Discard, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("notify test --help = %v", err)
	}
}
