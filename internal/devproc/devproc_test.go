package devproc

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestStartRedis: the redis-server it starts answers, and is gone once
// stopped.
func TestStartRedis(t *testing.T) {
	ctx := context.Background()
	addr, stop, err := StartRedis(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Error("the server still answers after stop")
	}
	if _, err := ModuleRoot(); err != nil {
		t.Errorf("ModuleRoot from inside the module: %v", err)
	}
}

// TestLoopback: only this machine's addresses pass, in every spelling.
func TestLoopback(t *testing.T) {
	for _, raw := range []string{"redis://127.0.0.1:6379", "redis://localhost:6379/0", "redis://[::1]:6379", "unix:///tmp/redis.sock", "http://127.0.0.2:8080"} {
		if err := Loopback(raw); err != nil {
			t.Errorf("%s refused: %v", raw, err)
		}
	}
	for _, raw := range []string{"redis://10.0.0.1:6379", "http://example.com", "http://[::2]:80", "redis://127.0.0.1.example.com:6379", "%zz"} {
		if err := Loopback(raw); err == nil {
			t.Errorf("%s accepted", raw)
		}
	}
}

// TestEnviron: what the service reads never reaches a process it starts,
// whatever the caller's shell sets; the rest does.
func TestEnviron(t *testing.T) {
	t.Setenv("IMPERSONATOR_TOKEN_TTL", "1h")
	t.Setenv("FOREST_AUTH_SECRET", "s")
	t.Setenv("REDIS_URL", "redis://10.0.0.1")
	t.Setenv("DEVPROC_CHILD", "1")
	t.Setenv("REDIS_URL_KEPT", "kept")
	env := Environ("DEVPROC_CHILD")
	if !slices.Contains(env, "REDIS_URL_KEPT=kept") {
		t.Error("an unrelated variable was dropped")
	}
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "IMPERSONATOR_") || strings.HasPrefix(name, "FOREST_") || name == "REDIS_URL" || name == "DEVPROC_CHILD" {
			t.Errorf("%s reached the child", kv)
		}
	}
}
