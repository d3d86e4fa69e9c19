// Package agentclient_test runs Forest's published @forestadmin/agent-client
// (pinned by package-lock.json, installed with npm ci) against the real
// service: the Impersonation history action as a Forest client calls it,
// its form hooks first.
package agentclient_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/servicetest"
)

func TestAgentClientHistoryAction(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: needs node, npm and the binary")
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			// Never skipped: the claim is unproven without them.
			t.Fatalf("%s not found: run scripts/test-deps (Debian: apt-get install nodejs npm)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), append(env, "npm_config_audit=false", "npm_config_fund=false", "npm_config_update_notifier=false")...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run(nil, "npm", "ci", "--prefer-offline")

	bin := servicetest.Build(t)
	secret := servicetest.Secret(t)
	svc := servicetest.Start(t, bin, map[string]string{
		"REDIS_URL": "", "IMPERSONATOR_KEYS_DIR": t.TempDir(), "FOREST_AUTH_SECRET": secret,
		"IMPERSONATOR_DELIVERY": "webhook", "IMPERSONATOR_LOG_LEVEL": "warn",
	})
	svc.Impersonate(t, "42", "")

	for _, endpoint := range []string{"/forest/_actions/users/0/impersonation-history", "/forest/actions/impersonation-history"} {
		out := run([]string{"IMPERSONATOR_URL=" + svc.URL, "FOREST_JWT=" + servicetest.ForestJWT(t, secret),
			"ACTION_ENDPOINT=" + endpoint, "RECORD_ID=42"}, "node", "history.mjs")
		var got struct {
			Error  string
			Fields *int
			Result struct{ Success, HTML string }
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &got); err != nil {
			t.Fatalf("%s: node printed %q: %v", endpoint, out, err)
		}
		if got.Error != "" || got.Fields == nil || *got.Fields != 0 {
			t.Fatalf("%s: the agent client got %s", endpoint, out)
		}
		if got.Result.Success != "Impersonation history of users 42" {
			t.Errorf("%s: success %q", endpoint, got.Result.Success)
		}
		for _, want := range []string{"<strong>1</strong> impersonation of users 42", "Ada Lovelace &lt;ada@example.com&gt;", "ticket 2121: the app&#39;s middleware test"} {
			if !strings.Contains(got.Result.HTML, want) {
				t.Errorf("%s: the HTML lacks %q:\n%s", endpoint, want, got.Result.HTML)
			}
		}
	}

	// Another Forest JWT secret: the client gets the service's 401.
	out := run([]string{"IMPERSONATOR_URL=" + svc.URL, "FOREST_JWT=" + servicetest.ForestJWT(t, servicetest.Secret(t)),
		"ACTION_ENDPOINT=/forest/actions/impersonation-history", "RECORD_ID=42"}, "node", "history.mjs")
	if !strings.Contains(out, `"error"`) || !strings.Contains(out, "401") {
		t.Errorf("with a foreign JWT the agent client got %s, want a 401 error", out)
	}
}
