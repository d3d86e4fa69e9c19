// Package ident decides the one canonical spelling of a record id.
//
// A policy such as `never: {users: ["1"]}` compares ids as text, while the
// customer's application (Rails, Node) reads "01", " 1", "+1", 1.0, 1e0,
// "１" or "1\u200b" as user 1. Every id that crosses the service's boundary
// (a JSON body, a policy file, a query, the CLI) therefore goes through
// FromJSON or Parse, which accept only the canonical spelling and refuse the
// others with an error that is safe to show the client.
//
// The rule:
//
//   - a JSON integer: no fraction, no exponent, within int64, rendered in
//     decimal; -0 is refused;
//   - a string (JSON string or text) of 1 to 128 characters from
//     [A-Za-z0-9_.:-], without leading or trailing space and without
//     non-ASCII; a "+" anywhere is refused; a string that reads as a
//     number must be a canonical integer: "01", "-0", "1.0", "1e0" are
//     refused, "0" and "-5" are fine; so are strings that other readers
//     take as numbers: "0x1" (JavaScript's Number) and "1_0" (Ruby).
//
// Not covered: lenient prefix parsing such as Ruby's "1-slug".to_i == 1 or
// JavaScript's parseInt("1abc") == 1; ids such as UUIDs legitimately start
// with digits, so such ids stay accepted as they are.
package ident

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLen is the longest id accepted, in characters (all ASCII).
const MaxLen = 128

// ErrNotCanonical is matched (errors.Is) by every error of this package.
var ErrNotCanonical = errors.New("record id is not canonical")

// Error says why an id was refused. Its message quotes the input with
// strconv.QuoteToASCII (shortened), so it is safe to send to a client or to
// print in a terminal.
type Error struct {
	Input  string // the id as received (decoded string, or raw JSON)
	Reason string // e.g. "leading zero"
}

func (e *Error) Error() string {
	return fmt.Sprintf("record id %s is not canonical: %s", quote(e.Input), e.Reason)
}

// Is makes errors.Is(err, ErrNotCanonical) true.
func (e *Error) Is(target error) bool { return target == ErrNotCanonical }

// quote renders s in ASCII, shortened to keep error messages small.
func quote(s string) string {
	const max = 48
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.QuoteToASCII(s[:cut]) + "..."
	}
	return strconv.QuoteToASCII(s)
}

func refuse(input, reason string, a ...any) error {
	return &Error{Input: input, Reason: fmt.Sprintf(reason, a...)}
}

// Parse returns s if it is a canonical id given as text (a policy's never
// list, the audit query's subject, the CLI), and an *Error otherwise. The
// rule is that of a JSON string in FromJSON.
func Parse(s string) (string, error) {
	if s == "" {
		return "", refuse(s, "empty")
	}
	if r, _ := utf8.DecodeRuneInString(s); unicode.IsSpace(r) {
		return "", refuse(s, "leading space")
	}
	if r, _ := utf8.DecodeLastRuneInString(s); unicode.IsSpace(r) {
		return "", refuse(s, "trailing space")
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			r, _ := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError {
				return "", refuse(s, "not valid UTF-8 or contains U+FFFD")
			}
			return "", refuse(s, "non-ASCII character U+%04X", r)
		}
	}
	if len(s) > MaxLen {
		return "", refuse(s, "longer than %d characters", MaxLen)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			return "", refuse(s, "plus sign")
		case c == '_' || c == '.' || c == ':' || c == '-',
			'0' <= c && c <= '9', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		default:
			return "", refuse(s, "character %s is not allowed (only A-Z a-z 0-9 _ . : -)", strconv.QuoteRuneToASCII(rune(c)))
		}
	}
	if isNumber(s) {
		if err := checkInteger(s, false); err != nil {
			return "", err
		}
	}
	if isRadix(s) {
		return "", refuse(s, "reads as a hexadecimal, binary or octal number")
	}
	if isUnderscored(s) {
		return "", refuse(s, "underscore between digits reads as a number")
	}
	return s, nil
}

// isRadix reports whether s is 0x, 0b or 0o followed by digits of that base
// whose value fits 64 bits: JavaScript's Number("0x1") is 1.
func isRadix(s string) bool {
	if len(s) < 3 || s[0] != '0' {
		return false
	}
	base := map[byte]int{'x': 16, 'X': 16, 'b': 2, 'B': 2, 'o': 8, 'O': 8}[s[1]]
	if base == 0 {
		return false
	}
	_, err := strconv.ParseUint(s[2:], base, 64)
	return err == nil
}

// isUnderscored reports whether s is -?digits(_digits)+: Ruby's "1_0".to_i
// and Integer("1_0") are 10.
func isUnderscored(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if !strings.Contains(s, "_") {
		return false
	}
	for _, part := range strings.Split(s, "_") {
		if part == "" || strings.Trim(part, "0123456789") != "" {
			return false
		}
	}
	return true
}

// FromJSON returns the canonical id of raw, a JSON integer or string as it
// arrives in a request body: 42 and "42" both give "42". It refuses every
// other JSON value and every non-canonical spelling with an *Error.
func FromJSON(raw json.RawMessage) (string, error) {
	s := strings.Trim(string(raw), " \t\r\n") // JSON whitespace around the value
	switch {
	case s == "":
		return "", refuse(string(raw), "empty")
	case s[0] == '"':
		var v string
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return "", refuse(s, "not a valid JSON string")
		}
		return Parse(v)
	case s[0] == '-' || ('0' <= s[0] && s[0] <= '9'):
		if !isNumber(s) {
			return "", refuse(s, "not a JSON integer or string")
		}
		if err := checkInteger(s, true); err != nil {
			return "", err
		}
		return s, nil
	default:
		return "", refuse(s, "not a JSON integer or string")
	}
}

// isNumber reports whether s has the shape of a number as JSON, JavaScript's
// Number() or Ruby's Float() would read it: -?digits[.digits][e[+-]digits],
// with the digits before or after the point optional (".5", "1.").
func isNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
		digits++
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		exp := 0
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
			exp++
		}
		if exp == 0 {
			return false
		}
	}
	return i == len(s)
}

// checkInteger refuses a number-shaped s that is not a canonical integer;
// within says whether it must also fit int64 (JSON numbers must; a string
// of digits may be a longer id).
func checkInteger(s string, within bool) error {
	if strings.ContainsAny(s, ".eE") {
		return refuse(s, "fraction or exponent")
	}
	digits := strings.TrimPrefix(s, "-")
	if len(digits) > 1 && digits[0] == '0' {
		return refuse(s, "leading zero")
	}
	if s == "-0" {
		return refuse(s, "negative zero")
	}
	if within {
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return refuse(s, "outside the int64 range")
		}
	}
	return nil
}
