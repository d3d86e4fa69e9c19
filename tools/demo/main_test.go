package main

import (
	"strings"
	"testing"
)

// TestDemo runs the demo and checks the story it tells.
func TestDemo(t *testing.T) {
	var out strings.Builder
	if err := run(&out); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		`200 "Impersonating users 42"`,
		"X-Impersonation-Subject=42 X-Impersonation-Actor=ada@example.com",
		`401 {"error":"invalid_token"}`,
		"logout 204, then the session endpoint answers 401",
		"replayed: token already redeemed",
		"verify: ok=true, 4 events covered",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
