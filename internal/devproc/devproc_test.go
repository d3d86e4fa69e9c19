package devproc

import (
	"context"
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
