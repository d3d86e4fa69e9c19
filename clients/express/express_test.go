// Package express_test runs the Express middleware's own tests (node's test
// runner, against the real service) as part of `go test ./...`, so `make
// test` covers them: npm ci from the pinned package-lock.json, then npm test
// with the service binary built once here.
package express_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/servicetest"
)

func TestExpressMiddleware(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: needs node, npm and the binary")
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			// Never skipped: the package is unproven without them.
			t.Fatalf("%s not found: run scripts/test-deps (Debian: apt-get install nodejs npm)", tool)
		}
	}
	bin := servicetest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	npm := func(args ...string) string {
		t.Helper()
		return run(ctx, t, "", bin, "npm", args...)
	}
	npm("ci", "--prefer-offline") // the registry only for what the cache lacks
	out := npm("test")
	// The figures the tests measured (node's diagnostics), for the log.
	for _, line := range strings.Split(out, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "# ") && strings.Contains(l, " ms") {
			t.Log(strings.TrimPrefix(l, "# "))
		}
	}
	for _, want := range []string{"# fail 0", "# cancelled 0", "# skipped 0", "# todo 0"} {
		if !strings.Contains(out, want) || strings.Contains(out, "# pass 0\n") {
			t.Errorf("npm test: no %q, or nothing passed:\n%s", want, out)
		}
	}

	// An app installs the package from its path, as a copy (what a
	// registry or tarball install gives), and imports it.
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	consumer := t.TempDir()
	if err := os.WriteFile(filepath.Join(consumer, "package.json"), []byte(`{"name":"some-app","private":true,"type":"module"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	run(ctx, t, consumer, bin, "npm", "install", "--prefer-offline", "--install-links", here)
	got := run(ctx, t, consumer, bin, "node", "--input-type=module", "-e",
		`import { impersonation } from 'impersonator-express'; const mw = impersonation({ publicUrl: 'https://app.example.com', audience: 'https://app.example.com' }); console.log(typeof mw, mw.length);`)
	if strings.TrimSpace(got) != "function 3" {
		t.Errorf("the installed package's middleware: %q, want a function of (req, res, next)", got)
	}
}

// run runs name with args in dir (the package's when empty) and returns its
// output; a failure fails the test.
func run(ctx context.Context, t *testing.T, dir, bin, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "IMPERSONATOR_BIN="+bin, "npm_config_audit=false", "npm_config_fund=false", "npm_config_update_notifier=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
