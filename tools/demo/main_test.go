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
		"200 X-Impersonation-Scope=read",
		`"scope":"read"`,
		"forward-auth of a POST under read only: 403",
		"live    Ada Lovelace  Support  read   ticket 1250: check the address shown",
		"logout  Ada Lovelace  Support  full   ticket 1234: customer cannot see invoices",
		"verify: ok=true, 6 events covered",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
