// Package safetext checks free text that people type (an impersonation
// reason) and renders stored text for terminals and spreadsheets without
// letting it rewrite the screen, forge rows or run formulas.
package safetext

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CheckReason refuses a reason that could hide or disguise what it says:
// invalid UTF-8, U+FFFD (what a JSON decoder makes of a lone surrogate), C0
// and C1 control characters other than tab (newlines included), bidi
// embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), line
// and paragraph separators (U+2028, U+2029), characters that hide text or
// look blank (see isHiding), and a reason with fewer than minVisible
// visible characters (see VisibleLen). The error's message is plain ASCII,
// safe to send to the client.
func CheckReason(s string, minVisible int) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("reason is not valid UTF-8")
	}
	for i, r := range s {
		var what string
		switch {
		case r == utf8.RuneError:
			what = "the replacement character U+FFFD (invalid input or an unpaired surrogate)"
		case isControl(r):
			what = fmt.Sprintf("the control character U+%04X", r)
		case isBidi(r):
			what = fmt.Sprintf("the bidirectional control U+%04X", r)
		case r == '\u2028' || r == '\u2029':
			what = fmt.Sprintf("the line separator U+%04X", r)
		case isHiding(r):
			what = fmt.Sprintf("the invisible or blank-looking character U+%04X", r)
		default:
			continue
		}
		return fmt.Errorf("reason contains %s at byte %d", what, i)
	}
	if n := VisibleLen(s); n < minVisible {
		return fmt.Errorf("reason has %d visible characters; at least %d are required", n, minVisible)
	}
	return nil
}

// isControl reports C0 (but tab), DEL and C1.
func isControl(r rune) bool {
	return (r < 0x20 && r != '\t') || (0x7f <= r && r <= 0x9f)
}

// isBidi reports the bidi embeddings, overrides and isolates.
func isBidi(r rune) bool {
	return (0x202a <= r && r <= 0x202e) || (0x2066 <= r && r <= 0x2069)
}

// isHiding reports the code points that show nothing while a reader
// counts them as text, or hide text from the reader: letters and symbols
// drawn blank (the Hangul fillers U+115F, U+1160, U+3164, U+FFA0 and
// U+2800 BRAILLE PATTERN BLANK), the tag characters U+E0000-U+E007F (which
// can spell a hidden ASCII message), the interlinear annotation controls
// U+FFF9-U+FFFB (which hide their annotation), and Unicode's other
// default-ignorable code points that have no use in a sentence (Khmer's
// invisible vowels U+17B4, U+17B5, the reserved U+2065, U+FFF0-U+FFF8 and
// U+E0080-U+E0FFF). The joiners, the directional marks (U+200C-U+200F,
// U+061C), the combining grapheme joiner U+034F and the variation
// selectors stay allowed: Persian, Arabic, Hebrew and emoji need them, and
// they do not count as visible either.
func isHiding(r rune) bool {
	switch {
	case r == 0x2800, 0xfff9 <= r && r <= 0xfffb, 0xe0000 <= r && r <= 0xe007f:
		return true
	case r == 0x034f:
		return false
	}
	return unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r)
}

// VisibleLen counts the characters of s that show: letters, digits,
// punctuation and symbols (Unicode L, N, P, S), except those isHiding
// reports (a Hangul filler is a letter drawn blank). Spaces, format characters
// (Cf, such as U+200B ZERO WIDTH SPACE), combining marks (M), controls and
// invalid bytes do not count, so NFC and NFD spellings of a text count the
// same.
func VisibleLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r == utf8.RuneError && size == 1 {
			continue
		}
		if unicode.In(r, unicode.L, unicode.N, unicode.P, unicode.S) && !isHiding(r) {
			n++
		}
	}
	return n
}

// Truncate cuts s to at most maxBytes bytes without splitting a UTF-8
// sequence (stored user_agent: 512 bytes; reason: 1000 bytes). Invalid bytes
// are kept as they are, one byte each.
func Truncate(s string, maxBytes int) string {
	if maxBytes <= 0 {
		return ""
	}
	if len(s) <= maxBytes {
		return s
	}
	cut := maxBytes
	// Find the start of the last sequence before cut; drop it if it
	// continues past cut.
	for j := cut - 1; j >= 0 && j > cut-utf8.UTFMax-1; j-- {
		if utf8.RuneStart(s[j]) {
			if r, size := utf8.DecodeRuneInString(s[j:]); !(r == utf8.RuneError && size == 1) && j+size > cut {
				cut = j
			}
			break
		}
	}
	return s[:cut]
}

// Terminal renders s for a field of table output in a terminal: every
// character that strconv.IsPrint refuses (controls, newlines, ESC, bidi
// controls, zero-width and other format characters, non-ASCII spaces) and
// every invalid byte is written as Go's %q would write it (\n, \x1b,
// \u202e, \xff), without the surrounding quotes; a backslash is doubled so
// an escape cannot be forged. Printable text, non-ASCII letters included, is
// left as is.
func Terminal(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// CSVCell neutralises spreadsheet formula injection (OWASP "CSV
// injection"): a cell starting with =, +, -, @, tab or carriage return gets
// a leading single quote, so a spreadsheet shows it as text. Quoting the
// cell for CSV is encoding/csv's job.
func CSVCell(s string) string {
	if s != "" && strings.IndexByte("=+-@\t\r", s[0]) >= 0 {
		return "'" + s
	}
	return s
}
