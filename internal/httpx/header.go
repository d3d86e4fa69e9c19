package httpx

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// HasControl reports whether s holds a control character (C0 including
// tab, CR and LF, DEL, C1) or invalid UTF-8: what must never reach a header
// value, a log line or a terminal as it is. The service refuses such values
// where they enter (a Forest-signed email at mint).
func HasControl(s string) bool {
	if !utf8.ValidString(s) {
		return true
	}
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

// HeaderValue is s made safe to write as an HTTP header value: each byte
// below 0x20 and DEL is written \xNN, so a NUL or a CR LF can neither cut
// nor forge a header (Go's server would pass a NUL through and turn CR LF
// into spaces). Values are refused where they enter; this is the guard for
// one that got past.
func HeaderValue(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for j := i; j < len(s); j++ {
		if c := s[j]; c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, `\x%02x`, c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}
