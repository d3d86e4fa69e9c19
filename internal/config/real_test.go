package config

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"strings"
	"testing"
	"time"
)

// TestRandomSecretsAlwaysStart (issue 18): a thousand random 64-hex
// secrets (Forest's FOREST_ENV_SECRET; openssl rand -hex 32) and a thousand
// 32-hex ones (openssl rand -hex 16) are all accepted, where the distinct
// characters rule refused about one in four and nine in ten.
func TestRandomSecretsAlwaysStart(t *testing.T) {
	for _, n := range []int{32, 16} {
		for i := 0; i < 1000; i++ {
			a, b := make([]byte, n), make([]byte, n)
			if _, err := rand.Read(a); err != nil {
				t.Fatal(err)
			}
			_, _ = rand.Read(b)
			auth, env := hex.EncodeToString(a), hex.EncodeToString(b)
			if i%2 == 1 {
				auth = strings.ToUpper(auth)
			}
			if _, err := load(t, map[string]string{"FOREST_AUTH_SECRET": auth, "FOREST_ENV_SECRET": env, "IMPERSONATOR_ADMIN_TOKENS": env + "k"}); err != nil {
				t.Fatalf("%d random bytes as hex refused: %v", n, err)
			}
		}
	}
}

// TestDerivedDefaults (issue 18): a default follows the setting it depends
// on, so setting the session TTL alone starts; a value given explicitly is
// still checked against it.
func TestDerivedDefaults(t *testing.T) {
	for _, tc := range []struct {
		ttl          string
		idle, unused time.Duration
	}{
		{"1m", time.Minute, time.Minute},
		{"5m", 5 * time.Minute, 2 * time.Minute},
		{"90s", 90 * time.Second, 90 * time.Second},
		{"30m", 10 * time.Minute, 2 * time.Minute},
	} {
		c, err := load(t, map[string]string{"IMPERSONATOR_SESSION_TTL": tc.ttl})
		if err != nil {
			t.Errorf("IMPERSONATOR_SESSION_TTL=%s alone: %v", tc.ttl, err)
			continue
		}
		if c.SessionIdle != tc.idle || c.SessionUnused != tc.unused {
			t.Errorf("IMPERSONATOR_SESSION_TTL=%s: idle %s, unused %s; want %s, %s", tc.ttl, c.SessionIdle, c.SessionUnused, tc.idle, tc.unused)
		}
	}
	for _, tc := range []struct {
		vars  map[string]string
		args  []string
		wrong string
	}{
		{map[string]string{"IMPERSONATOR_SESSION_TTL": "1m", "IMPERSONATOR_SESSION_UNUSED": "2m"}, nil, "IMPERSONATOR_SESSION_UNUSED"},
		{map[string]string{"IMPERSONATOR_SESSION_TTL": "1m"}, []string{"--session-idle", "2m"}, "IMPERSONATOR_SESSION_IDLE"},
	} {
		if _, err := load(t, tc.vars, tc.args...); err == nil || !strings.Contains(err.Error(), tc.wrong+": 2m0s exceeds IMPERSONATOR_SESSION_TTL") {
			t.Errorf("%v %v: err = %v, want %s refused", tc.vars, tc.args, err, tc.wrong)
		}
	}
}

// TestUnknownVariableWarns (issue 18): an IMPERSONATOR_* variable that is
// no setting is a warning naming the nearest setting, not a silent no-op
// and not a refusal to start.
func TestUnknownVariableWarns(t *testing.T) {
	environ := []string{"HOME=/root", "IMPERSONATOR_SESION_TTL=1m", "IMPERSONATOR_SESSION_IDLE=5m", "IMPERSONATOR_DEV_PPROF=1",
		"IMPERSONATOR_PUBLICURL=https://imp.example.com", "IMPERSONATOR_XYZZY=1", "FOREST_AUTH_SECRT=x"}
	c, err := LoadWith(Options{Environ: environ}, nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"IMPERSONATOR_SESION_TTL is not a setting and is ignored; did you mean IMPERSONATOR_SESSION_TTL?",
		"IMPERSONATOR_PUBLICURL is not a setting and is ignored; did you mean IMPERSONATOR_PUBLIC_URL?",
		"IMPERSONATOR_XYZZY is not a setting and is ignored (impersonator serve --help lists them)",
	}
	if strings.Join(c.Warnings, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(c.Warnings, "\n"), strings.Join(want, "\n"))
	}
}
