package config

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
		Delivery:           Webhook,
		TokenTTL:           60 * time.Second,
		SessionTTL:         30 * time.Minute,
		SessionIdle:        10 * time.Minute,
		AllowedOrigins:     []string{"https://app.forestadmin.com", "https://*.forestadmin.com"},
		LoginRate:          Rate{N: 30, Per: time.Minute},
		LogFormat:          "text",
		LogLevel:           slog.LevelInfo,
		CheckpointInterval: time.Minute,
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

func TestValues(t *testing.T) {
	secret := strings.Repeat("s", 32)
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
