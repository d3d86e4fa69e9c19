package config

import (
	"errors"
	"flag"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/notify"
)

func load(t *testing.T, vars map[string]string, args ...string) (*Config, error) {
	t.Helper()
	return Load(args, func(k string) string { return vars[k] }, io.Discard)
}

func TestDefaults(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Listen:             "127.0.0.1:8080",
		PublicURL:          "http://localhost:8080",
		AppURL:             "http://localhost:3000",
		Audience:           "http://localhost:3000",
		KeysDir:            "keys",
		Delivery:           Auto,
		TokenTTL:           60 * time.Second,
		SessionTTL:         30 * time.Minute,
		SessionIdle:        10 * time.Minute,
		AllowedOrigins:     []string{"https://app.forestadmin.com", "https://*.forestadmin.com"},
		LoginRate:          Rate{N: 30, Per: time.Minute},
		LogFormat:          "text",
		LogLevel:           slog.LevelInfo,
		CheckpointInterval: time.Minute,
		ReplicaAck:         100 * time.Millisecond,
		SessionUnused:      2 * time.Minute,
		SweepInterval:      30 * time.Second,
		PolicyPoll:         30 * time.Second,
		Notify:             notify.Config{Events: audit.Types}, // off: no URL, every type selected
		ShutdownDrain:      5 * time.Second,
		ShutdownTimeout:    10 * time.Second,
	}
	if diff := cmp.Diff(want, c, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	c, err := load(t, map[string]string{"IMPERSONATOR_TOKEN_TTL": "30s", "IMPERSONATOR_DELIVERY": "webhook"},
		"--token-ttl", "2m", "--delivery", "redirect")
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenTTL != 2*time.Minute || c.Delivery != Redirect {
		t.Errorf("TokenTTL, Delivery = %v, %v; want 2m, redirect", c.TokenTTL, c.Delivery)
	}
}

// secret is a secret the service accepts: tag, then 32 random hex digits
// (openssl rand -hex 16).
func secret(tag string) string { return tag + "-9f1c4e7a2b6d8035e1f4a9c7b2d60e83" }

func TestValues(t *testing.T) {
	secret := secret("s")
	c, err := load(t, map[string]string{
		"IMPERSONATOR_PUBLIC_URL":      "https://imp.example.com/",
		"IMPERSONATOR_APP_URL":         "https://app.example.com",
		"IMPERSONATOR_AUDIENCE":        "app",
		"REDIS_URL":                    "redis://:pw@redis:6379/0",
		"FOREST_AUTH_SECRET":           secret,
		"IMPERSONATOR_ADMIN_TOKENS":    secret + "1, " + secret + "2",
		"IMPERSONATOR_LOGIN_RATE":      "0",
		"IMPERSONATOR_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7",
		"IMPERSONATOR_ALLOWED_ORIGINS": "https://admin.example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.PublicURL != "https://imp.example.com" || !c.Secure() {
		t.Errorf("PublicURL = %q, Secure %v; want the URL without trailing slash, secure", c.PublicURL, c.Secure())
	}
	if c.Audience != "app" || len(c.AdminTokens) != 2 || c.LoginRate.N != 0 || c.LogFormat != "json" {
		t.Errorf("got %+v", c)
	}
	if !c.AdminTokens[1].Equal(secret+"2") || c.AdminTokens[1].Equal(secret+"1") {
		t.Error("admin tokens parsed wrong")
	}
	wantProxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}
	if diff := cmp.Diff(wantProxies, c.TrustedProxies, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("trusted proxies (-want +got):\n%s", diff)
	}
}

func TestProblems(t *testing.T) {
	for _, tc := range []struct {
		env, value string
	}{
		{"IMPERSONATOR_LISTEN", " "},
		{"IMPERSONATOR_PUBLIC_URL", "localhost:8080"},
		{"IMPERSONATOR_APP_URL", "https://app.example.com/?x=1"},
		{"REDIS_URL", "mysql://db"},
		{"FOREST_ENV_SECRET", "short"},
		{"IMPERSONATOR_DELIVERY", "email"},
		{"IMPERSONATOR_TOKEN_TTL", "6m"},
		{"IMPERSONATOR_TOKEN_TTL", "soon"},
		{"IMPERSONATOR_SESSION_TTL", "48h"},
		{"IMPERSONATOR_SESSION_IDLE", "1s"},
		{"IMPERSONATOR_ALLOWED_ORIGINS", "https://app.example.com/path"},
		{"IMPERSONATOR_ALLOWED_ORIGINS", "*"},
		{"IMPERSONATOR_ALLOWED_ORIGINS", "https://*.*.example.com"},
		{"IMPERSONATOR_POLICY_FILE", "/does/not/exist.yaml"},
		{"IMPERSONATOR_LOGIN_RATE", "30/day"},
		{"IMPERSONATOR_LOGIN_RATE", "-1/m"},
		{"IMPERSONATOR_TRUSTED_PROXIES", "not-an-ip"},
		{"IMPERSONATOR_LOG_FORMAT", "xml"},
		{"IMPERSONATOR_LOG_LEVEL", "loud"},
		{"IMPERSONATOR_CHECKPOINT_INTERVAL", "0s"},
		{"IMPERSONATOR_AUDIT_RETENTION", "10m"},
		{"IMPERSONATOR_AUDIT_RETENTION", "forever"},
		{"IMPERSONATOR_METRICS_LISTEN", "9090"},
		{"IMPERSONATOR_METRICS_LISTEN", "localhost:http"},
		{"IMPERSONATOR_METRICS_LISTEN", "127.0.0.1:8080"}, // the main listener
		{"IMPERSONATOR_REDIS_REPLICA_ACK", "6s"},
		{"IMPERSONATOR_REDIS_REPLICA_ACK", "-1ms"},
		{"IMPERSONATOR_REDIS_REPLICA_ACK", "fast"},
		{"IMPERSONATOR_SESSION_UNUSED", "500ms"},
		{"IMPERSONATOR_SESSION_UNUSED", "31m"}, // over the 30m session cap
		{"IMPERSONATOR_SWEEP_INTERVAL", "50ms"},
		{"IMPERSONATOR_SWEEP_INTERVAL", "11m"},
		{"IMPERSONATOR_ALLOWED_ORIGINS", "https://*.com"},
		{"FOREST_AUTH_SECRET", strings.Repeat("a", 32)},
		{"IMPERSONATOR_ADMIN_TOKENS", strings.Repeat("ab", 20)},
	} {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			_, err := load(t, map[string]string{tc.env: tc.value})
			var cerr *Error
			if !errors.As(err, &cerr) || len(cerr.Problems) != 1 || !strings.HasPrefix(cerr.Problems[0].Error(), tc.env+":") {
				t.Errorf("err = %v, want exactly one problem naming %s", err, tc.env)
			}
		})
	}
}

func TestIdleOverCap(t *testing.T) {
	_, err := load(t, map[string]string{"IMPERSONATOR_SESSION_TTL": "5m", "IMPERSONATOR_SESSION_IDLE": "10m"})
	if err == nil || !strings.Contains(err.Error(), "IMPERSONATOR_SESSION_IDLE") {
		t.Errorf("err = %v, want the idle timeout refused for exceeding the cap", err)
	}
}

func TestSecretRedacts(t *testing.T) {
	s := Secret("hunter2-value")
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "secret", s)
	if strings.Contains(b.String(), "hunter2") || strings.Contains(s.String(), "hunter2") {
		t.Errorf("secret printed: %q / %q", b.String(), s.String())
	}
	if Secret("").Equal("") {
		t.Error("an empty secret equals the empty string: an unset secret must match nothing")
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{"30/m": {30, time.Minute}, "5/s": {5, time.Second}, "100/h": {100, time.Hour}, "0": {}} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
		if in != "0" && got.String() != in {
			t.Errorf("Rate(%q).String() = %q", in, got.String())
		}
	}
}

func TestNewOptions(t *testing.T) {
	c, err := load(t, map[string]string{
		"IMPERSONATOR_METRICS_LISTEN":    "127.0.0.1:9090",
		"IMPERSONATOR_REDIS_REPLICA_ACK": "0",
		"IMPERSONATOR_SESSION_UNUSED":    "1s",
		"IMPERSONATOR_SWEEP_INTERVAL":    "100ms",
		"IMPERSONATOR_DELIVERY":          "redirect",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsListen != "127.0.0.1:9090" || c.ReplicaAck != 0 || c.SessionUnused != time.Second ||
		c.SweepInterval != 100*time.Millisecond || c.Delivery != Redirect {
		t.Errorf("got MetricsListen %q, ReplicaAck %v, SessionUnused %v, SweepInterval %v, Delivery %v",
			c.MetricsListen, c.ReplicaAck, c.SessionUnused, c.SweepInterval, c.Delivery)
	}
	c, err = load(t, map[string]string{"IMPERSONATOR_REDIS_REPLICA_ACK": "5s", "IMPERSONATOR_SWEEP_INTERVAL": "10m"},
		"--metrics-listen", ":9090", "--delivery", "auto")
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsListen != ":9090" || c.ReplicaAck != 5*time.Second || c.SweepInterval != 10*time.Minute || c.Delivery != Auto {
		t.Errorf("got MetricsListen %q, ReplicaAck %v, SweepInterval %v, Delivery %v", c.MetricsListen, c.ReplicaAck, c.SweepInterval, c.Delivery)
	}
}

// oneProblem asserts that err lists exactly one problem, naming env and
// containing want.
func oneProblem(t *testing.T, err error, env, want string) {
	t.Helper()
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) != 1 || !strings.HasPrefix(cerr.Problems[0].Error(), env+":") ||
		!strings.Contains(cerr.Problems[0].Error(), want) {
		t.Errorf("err = %v, want exactly one problem naming %s about %q", err, env, want)
	}
}

func TestWildcardOriginOnPublicSuffix(t *testing.T) {
	for _, o := range []string{
		"https://*.com",
		"https://*.co.uk",
		"https://*.COM",
		"https://*.com.",
		"https://*.com:8443",
		"https://*.github.io",     // private suffix
		"https://*.herokuapp.com", // private suffix
		"https://*.localhost",     // a single label
	} {
		_, err := load(t, map[string]string{"IMPERSONATOR_ALLOWED_ORIGINS": "https://app.forestadmin.com," + o})
		oneProblem(t, err, "IMPERSONATOR_ALLOWED_ORIGINS", "public suffix")
	}
	for _, o := range []string{"https://*.forestadmin.com", "https://*.example.co.uk", "https://*.admin.github.io", "http://*.corp.example:8080"} {
		c, err := load(t, map[string]string{"IMPERSONATOR_ALLOWED_ORIGINS": o})
		if err != nil || len(c.AllowedOrigins) != 1 || c.AllowedOrigins[0] != o {
			t.Errorf("origin %q: err = %v, want it allowed", o, err)
		}
	}
}

func TestSecretsDistinctAndUnguessable(t *testing.T) {
	a, b, k := secret("auth"), secret("env"), secret("admin")
	for _, tc := range []struct {
		name     string
		vars     map[string]string
		env, msg string
	}{
		{"env equals auth", map[string]string{"FOREST_AUTH_SECRET": a, "FOREST_ENV_SECRET": a}, "FOREST_ENV_SECRET", "FOREST_ENV_SECRET equals FOREST_AUTH_SECRET"},
		{"admin token equals auth", map[string]string{"FOREST_AUTH_SECRET": a, "IMPERSONATOR_ADMIN_TOKENS": k + "," + a}, "IMPERSONATOR_ADMIN_TOKENS", "admin token 2 equals FOREST_AUTH_SECRET"},
		{"admin token equals env", map[string]string{"FOREST_ENV_SECRET": b, "IMPERSONATOR_ADMIN_TOKENS": b}, "IMPERSONATOR_ADMIN_TOKENS", "admin token 1 equals FOREST_ENV_SECRET"},
		{"two equal admin tokens", map[string]string{"IMPERSONATOR_ADMIN_TOKENS": k + ", " + k}, "IMPERSONATOR_ADMIN_TOKENS", "admin token 2 equals admin token 1"},
		{"32 a", map[string]string{"FOREST_AUTH_SECRET": strings.Repeat("a", 32)}, "FOREST_AUTH_SECRET", "is a piece of 1 characters repeated"},
		{"a piece repeated", map[string]string{"FOREST_ENV_SECRET": strings.Repeat("0123456789abcde", 3)}, "FOREST_ENV_SECRET", "is a piece of 15 characters repeated"},
		{"repetitive admin token", map[string]string{"IMPERSONATOR_ADMIN_TOKENS": k + "," + strings.Repeat("xy", 20)}, "IMPERSONATOR_ADMIN_TOKENS", "admin token 2 is a piece of 2 characters repeated"},
		{"a sequence", map[string]string{"FOREST_AUTH_SECRET": "0123456789abcdefghijklmnopqrstuvwxyz"}, "FOREST_AUTH_SECRET", "mostly runs of repeated or consecutive characters"},
		{"a sequence with a prefix", map[string]string{"FOREST_AUTH_SECRET": "s-0123456789abcdefghijklmnopqrstuv"}, "FOREST_AUTH_SECRET", "mostly runs"},
		{"32 digits", map[string]string{"FOREST_ENV_SECRET": "80934712650938471265093847126509"}, "FOREST_ENV_SECRET", "about 106 bits of entropy"},
		{"a word padded", map[string]string{"FOREST_ENV_SECRET": "aaaaaaaaaaaaaaaaaaaaaaaaaaaa-password"}, "FOREST_ENV_SECRET", "mostly runs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.vars)
			oneProblem(t, err, tc.env, tc.msg)
			if err != nil && (strings.Contains(err.Error(), "0123456789") || strings.Contains(err.Error(), "9f1c4e7a")) {
				t.Errorf("the error prints a secret: %v", err)
			}
		})
	}
	c, err := load(t, map[string]string{"FOREST_AUTH_SECRET": a, "FOREST_ENV_SECRET": b,
		"IMPERSONATOR_ADMIN_TOKENS": k + "1," + k + "2," + "3f9a0c7e1b5d2846a0e9c3f7b1d5e829"})
	if err != nil || len(c.AdminTokens) != 3 {
		t.Errorf("distinct, random-looking secrets: err = %v", err)
	}
}

func TestKeysDirPermissions(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o700, true},
		{0o755, true},
		{0o750, true},
		{0o770, false},
		{0o757, false},
		{0o777, false},
	} {
		dir := filepath.Join(t.TempDir(), "keys")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := load(t, map[string]string{"IMPERSONATOR_KEYS_DIR": dir})
		if tc.ok && err != nil {
			t.Errorf("mode %04o: err = %v, want loaded", tc.mode, err)
		}
		if !tc.ok {
			oneProblem(t, err, "IMPERSONATOR_KEYS_DIR", "writable by group or others")
		}
	}
	if _, err := load(t, map[string]string{"IMPERSONATOR_KEYS_DIR": filepath.Join(t.TempDir(), "missing")}); err != nil {
		t.Errorf("a missing keys folder: err = %v, want loaded (keys generate creates it)", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := load(t, map[string]string{"IMPERSONATOR_KEYS_DIR": file})
	oneProblem(t, err, "IMPERSONATOR_KEYS_DIR", "not a folder")
}

func TestPolicyProblemsListedWithOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("rules: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var checked []string
	opts := Options{CheckPolicy: func(p string) []error {
		checked = append(checked, p)
		return []error{errors.New("line 1: bad rules"), errors.New("line 2: unknown collection")}
	}}
	vars := map[string]string{"IMPERSONATOR_POLICY_FILE": path, "IMPERSONATOR_TOKEN_TTL": "10m"}
	_, err := LoadWith(opts, nil, func(k string) string { return vars[k] }, io.Discard)
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) != 3 || !strings.Contains(err.Error(), "IMPERSONATOR_POLICY_FILE: line 2: unknown collection") ||
		!strings.Contains(err.Error(), "IMPERSONATOR_TOKEN_TTL") {
		t.Errorf("err = %v, want the token TTL and both policy problems", err)
	}
	if len(checked) != 1 || checked[0] != path {
		t.Errorf("CheckPolicy called with %q, want [%q]", checked, path)
	}
	checked = nil
	if _, err := LoadWith(opts, nil, func(string) string { return "" }, io.Discard); err != nil || len(checked) != 0 {
		t.Errorf("no policy file: err = %v, CheckPolicy called with %q; want neither", err, checked)
	}
}

func TestWarnPlainHTTPWithRealRedis(t *testing.T) {
	for _, tc := range []struct {
		redis, public string
		warn          bool
	}{
		{"redis://redis:6379", "http://imp.example.com", true},
		{"redis://redis:6379", "http://10.0.0.5:8080", true},
		{"redis://redis:6379", "https://imp.example.com", false},
		{"redis://redis:6379", "http://localhost:8080", false},
		{"redis://redis:6379", "http://imp.localhost:8080", false},
		{"redis://redis:6379", "http://127.0.0.1:8080", false},
		{"redis://redis:6379", "http://[::1]:8080", false},
		{"", "http://imp.example.com", false},
	} {
		c, err := load(t, map[string]string{"REDIS_URL": tc.redis, "IMPERSONATOR_PUBLIC_URL": tc.public})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(c.Warnings) == 1 && strings.Contains(c.Warnings[0], "IMPERSONATOR_PUBLIC_URL"); got != tc.warn || len(c.Warnings) > 1 {
			t.Errorf("REDIS_URL %q, public URL %q: warnings %q, want a warning: %v", tc.redis, tc.public, c.Warnings, tc.warn)
		}
	}
}

// TestFlagErrorsOnce: Load prints nothing for a bad flag (the caller prints
// the returned error), and prints the usage for --help.
func TestFlagErrorsOnce(t *testing.T) {
	var out strings.Builder
	_, err := Load([]string{"--no-such-flag"}, func(string) string { return "" }, &out)
	if err == nil || !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("err = %v, want it to name the flag", err)
	}
	if out.Len() != 0 {
		t.Errorf("Load printed %q for a bad flag; the caller prints the error once", out.String())
	}
	out.Reset()
	_, err = Load([]string{"--token-ttl"}, func(string) string { return "" }, &out)
	if err == nil || out.Len() != 0 {
		t.Errorf("missing flag value: err = %v, printed %q", err, out.String())
	}
	out.Reset()
	_, err = Load([]string{"--help"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "Usage: impersonator serve") ||
		!strings.Contains(out.String(), "--sweep-interval (IMPERSONATOR_SWEEP_INTERVAL, default 30s)") {
		t.Errorf("--help: err = %v, printed %q", err, out.String())
	}
}

// TestNoStoreImport: config validates REDIS_URL without the store package.
func TestNoStoreImport(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatal(files, err)
	}
	for _, name := range files {
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if strings.HasSuffix(imp.Path.Value, `/internal/store"`) {
				t.Errorf("%s imports %s", name, imp.Path.Value)
			}
		}
	}
}
