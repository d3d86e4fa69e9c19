package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/impersonator/impersonator/internal/app"
	"github.com/impersonator/impersonator/internal/redistest"
)

// TestFirstRunDevSecret is make run's first run: on the embedded Redis
// without FOREST_AUTH_SECRET, serve makes a random development secret
// beside the development key (0600), says so, and the Forest action
// accepts a JWT that `dev forest-jwt` signs with the secret it finds there;
// a second run keeps it; no secret is made with FOREST_AUTH_SECRET set or
// with REDIS_URL.
func TestFirstRunDevSecret(t *testing.T) {
	dir := t.TempDir() + "/keys"
	base, stderr := startServe(t, map[string]string{"IMPERSONATOR_KEYS_DIR": dir})
	path := filepath.Join(dir, app.DevForestSecretFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no development secret beside the key: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %04o, want 0600", path, fi.Mode().Perm())
	}
	first, _ := os.ReadFile(path)
	if len(strings.TrimSpace(string(first))) < 32 {
		t.Errorf("development secret %q is shorter than 32 characters", first)
	}
	if !strings.Contains(stderr.String(), "generated a random DEVELOPMENT secret in "+path) {
		t.Errorf("serve does not say it generated the secret:\n%s", stderr.String())
	}

	// dev forest-jwt, with the same keys folder and no FOREST_AUTH_SECRET,
	// signs a JWT the running service accepts.
	var jwt, errOut bytes.Buffer
	if err := run(context.Background(), []string{"dev", "forest-jwt", "--email", "ada@example.com"},
		env(map[string]string{"IMPERSONATOR_KEYS_DIR": dir}), &jwt, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), path) {
		t.Errorf("dev forest-jwt does not say which secret it used: %q", errOut.String())
	}
	if code := mintWith(t, base, strings.TrimSpace(jwt.String())); code != 200 {
		t.Errorf("the action with dev forest-jwt's JWT answered %d, want 200", code)
	}

	// A second run keeps the secret.
	_, stderr2 := startServe(t, map[string]string{"IMPERSONATOR_KEYS_DIR": dir})
	if again, _ := os.ReadFile(path); string(again) != string(first) {
		t.Error("a second run replaced the development secret")
	}
	if !strings.Contains(stderr2.String(), "using a random DEVELOPMENT secret in "+path) {
		t.Errorf("the second run does not say it uses the kept secret:\n%s", stderr2.String())
	}

	// With FOREST_AUTH_SECRET set, or with REDIS_URL, nothing is made.
	set := t.TempDir() + "/keys"
	startServe(t, map[string]string{"IMPERSONATOR_KEYS_DIR": set, "FOREST_AUTH_SECRET": forestSecret})
	if _, err := os.Stat(filepath.Join(set, app.DevForestSecretFile)); err == nil {
		t.Error("a development secret was made although FOREST_AUTH_SECRET is set")
	}
	srv := redistest.StartServer(t)
	real := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "--dir", real}, env(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	realBase, realLog := startServe(t, map[string]string{"IMPERSONATOR_KEYS_DIR": real, "REDIS_URL": srv.URL()})
	if _, err := os.Stat(filepath.Join(real, app.DevForestSecretFile)); err == nil {
		t.Error("a development secret was made with REDIS_URL set")
	}
	if !strings.Contains(realLog.String(), "FOREST_AUTH_SECRET is not set: the Forest action routes answer 503") {
		t.Errorf("with REDIS_URL and no secret, serve does not say the action answers 503:\n%s", realLog.String())
	}
	if code := mintWith(t, realBase, strings.TrimSpace(jwt.String())); code != 503 {
		t.Errorf("the action with REDIS_URL and no secret answered %d, want 503", code)
	}
}

// mintWith calls the Forest action on base with the Forest UI JWT bearer
// and returns the status.
func mintWith(t *testing.T, base, bearer string) int {
	t.Helper()
	body := `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],"values":{"Reason":"ticket 1234: cannot see invoices"},"smart_action_id":"users-impersonate"}}}`
	req, _ := http.NewRequest(http.MethodPost, base+"/forest/actions/impersonate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
