package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestServeWarnsOfUnknownVariables (issue 18): serve started with a
// misspelled IMPERSONATOR_* variable in its environment starts, and logs a
// warning naming the setting meant.
func TestServeWarnsOfUnknownVariables(t *testing.T) {
	t.Setenv("IMPERSONATOR_SESION_TTL", "1m")
	listening := make(chan string, 2)
	ctx, cancel := context.WithCancel(withListening(context.Background(), func(name, addr string) { listening <- name }))
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, env(map[string]string{
			"IMPERSONATOR_LISTEN": "127.0.0.1:0", "IMPERSONATOR_KEYS_DIR": t.TempDir() + "/keys",
		}), &bytes.Buffer{}, &stderr)
	}()
	select {
	case <-listening:
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not listen")
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	if !strings.Contains(stderr.String(), "IMPERSONATOR_SESION_TTL is not a setting and is ignored; did you mean IMPERSONATOR_SESSION_TTL?") {
		t.Errorf("serve's log does not warn of the misspelling:\n%s", stderr.String())
	}
}
