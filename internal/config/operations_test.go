package config

import (
	"strings"
	"testing"
	"time"
)

// TestOperationsVariables: the shutdown durations and the eviction
// override parse, and bad values are listed with their variable.
func TestOperationsVariables(t *testing.T) {
	c, err := load(t, map[string]string{"IMPERSONATOR_SHUTDOWN_DRAIN": "0s", "IMPERSONATOR_SHUTDOWN_TIMEOUT": "30s",
		"IMPERSONATOR_REDIS_ALLOW_EVICTION": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ShutdownDrain != 0 || c.ShutdownTimeout != 30*time.Second || !c.AllowEviction {
		t.Errorf("drain %s, timeout %s, allow eviction %v; want 0s, 30s, true", c.ShutdownDrain, c.ShutdownTimeout, c.AllowEviction)
	}
	_, err = load(t, map[string]string{"IMPERSONATOR_SHUTDOWN_DRAIN": "-1s", "IMPERSONATOR_SHUTDOWN_TIMEOUT": "0s",
		"IMPERSONATOR_REDIS_ALLOW_EVICTION": "sure"})
	for _, want := range []string{"IMPERSONATOR_SHUTDOWN_DRAIN: -1s is outside", "IMPERSONATOR_SHUTDOWN_TIMEOUT: 0s is outside",
		`IMPERSONATOR_REDIS_ALLOW_EVICTION: "sure" is neither true nor false`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %q", err, want)
		}
	}
}
