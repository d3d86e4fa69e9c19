package httpx

import "testing"

func TestHeaderValue(t *testing.T) {
	for in, want := range map[string]string{
		"ada@example.com":         "ada@example.com",
		"ada\x00@example.com":     `ada\x00@example.com`,
		"ada@example.com\r\nX: 1": `ada@example.com\x0d\x0aX: 1`,
		"\x7f\x1b[2J":             `\x7f\x1b[2J`,
		"zoë@exämple.com":         "zoë@exämple.com",
	} {
		if got := HeaderValue(in); got != want {
			t.Errorf("HeaderValue(%q) = %q, want %q", in, got, want)
		}
	}
	for s, want := range map[string]bool{"ada@example.com": false, "zoë@exämple.com": false, "a\x00b": true, "a\tb": true, "a\u0085b": true, "a\xffb": true} {
		if got := HasControl(s); got != want {
			t.Errorf("HasControl(%q) = %v, want %v", s, got, want)
		}
	}
}
