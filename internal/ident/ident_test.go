package ident

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
)

var canonical = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

func TestFromJSON(t *testing.T) {
	for _, tc := range []struct {
		raw, want string
	}{
		{`42`, "42"},
		{`"42"`, "42"},
		{` 42 `, "42"}, // JSON whitespace around the value is syntax, not content
		{`0`, "0"},
		{`"0"`, "0"},
		{`-7`, "-7"},
		{`"-7"`, "-7"},
		{`"usr_9f.A-b:c"`, "usr_9f.A-b:c"},
		{`"123e4567-e89b-12d3-a456-426614174000"`, "123e4567-e89b-12d3-a456-426614174000"},
		{`"0x52908400098527886E0F7030069857D2E4169EE7"`, "0x52908400098527886E0F7030069857D2E4169EE7"},
		{`"\u0031"`, "1"}, // an escape is JSON syntax: the value is "1"
		{`9223372036854775807`, "9223372036854775807"},
		{`-9223372036854775808`, "-9223372036854775808"},
		{`"99999999999999999999999"`, "99999999999999999999999"}, // a long string of digits may be an id
		{`"` + strings.Repeat("a", 128) + `"`, strings.Repeat("a", 128)},
	} {
		got, err := FromJSON(json.RawMessage(tc.raw))
		if err != nil || got != tc.want {
			t.Errorf("FromJSON(%s) = %q, %v; want %q", tc.raw, got, err, tc.want)
		}
	}
}

func TestFromJSONRefuses(t *testing.T) {
	for _, tc := range []struct {
		raw, reason string
	}{
		// Spellings Rails or JavaScript read as user 1.
		{`"01"`, "leading zero"},
		{`" 1"`, "leading space"},
		{`"1 "`, "trailing space"},
		{`"\t1"`, "leading space"},
		{`"\u00a01"`, "leading space"},
		{`"+1"`, "plus sign"},
		{`"1+"`, "plus sign"},
		{`1.0`, "fraction or exponent"},
		{`1e0`, "fraction or exponent"},
		{`1E0`, "fraction or exponent"},
		{`10e-1`, "fraction or exponent"},
		{`"1.0"`, "fraction or exponent"},
		{`"1e0"`, "fraction or exponent"},
		{`"1."`, "fraction or exponent"},
		{`".1e1"`, "fraction or exponent"},
		{`"１"`, "non-ASCII character U+FF11"},
		{`"\uff11"`, "non-ASCII character U+FF11"},
		{`"1\u200b"`, "non-ASCII character U+200B"},
		{`"\u200b1"`, "non-ASCII character U+200B"},
		{`"1\u0000"`, "character"},
		{`"\ud800"`, "U+FFFD"}, // a lone surrogate decodes to U+FFFD
		{`"0x1"`, "hexadecimal"},
		{`"0b1"`, "hexadecimal, binary or octal"},
		{`"0o1"`, "hexadecimal, binary or octal"},
		{`"1_0"`, "underscore"},
		{`"00"`, "leading zero"},
		{`"-01"`, "leading zero"},
		{`"-0"`, "negative zero"},
		{`-0`, "negative zero"},
		{`01`, "leading zero"},
		{`+1`, "not a JSON integer or string"},
		// Other shapes.
		{``, "empty"},
		{`""`, "empty"},
		{`"` + strings.Repeat("a", 129) + `"`, "longer than 128"},
		{`9223372036854775808`, "outside the int64 range"},
		{`-9223372036854775809`, "outside the int64 range"},
		{`null`, "not a JSON integer or string"},
		{`true`, "not a JSON integer or string"},
		{`[1]`, "not a JSON integer or string"},
		{`{"id":1}`, "not a JSON integer or string"},
		{`1 2`, "not a JSON integer or string"},
		{`"1" "2"`, "not a valid JSON string"},
		{`"1`, "not a valid JSON string"},
		{`"a/b"`, `character '/' is not allowed`},
		{`"a b"`, `character ' ' is not allowed`},
		{`"a\nb"`, `character '\n' is not allowed`},
	} {
		got, err := FromJSON(json.RawMessage(tc.raw))
		if err == nil {
			t.Errorf("FromJSON(%s) = %q, want refused (%s)", tc.raw, got, tc.reason)
			continue
		}
		var ierr *Error
		if !errors.Is(err, ErrNotCanonical) || !errors.As(err, &ierr) || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("FromJSON(%s) error = %v, want an *Error matching ErrNotCanonical about %q", tc.raw, err, tc.reason)
		}
		if !strings.HasPrefix(err.Error(), "record id ") || strings.ContainsFunc(err.Error(), func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			t.Errorf("FromJSON(%s) error %q is not plain printable ASCII", tc.raw, err)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	_, err := Parse("01")
	if want := `record id "01" is not canonical: leading zero`; err == nil || err.Error() != want {
		t.Errorf("Parse(01) error = %v, want %s", err, want)
	}
	_, err = Parse(strings.Repeat("\u202e", 200))
	if err == nil || len(err.Error()) > 400 || strings.Contains(err.Error(), "\u202e") {
		t.Errorf("error for a long hostile id is %q: want short, escaped", err)
	}
}

func TestParse(t *testing.T) {
	for _, ok := range []string{"42", "0", "-5", "usr_9f.A-b:c", "a", "ID:7", strings.Repeat("z", 128), "1-slug", "9223372036854775808"} {
		if got, err := Parse(ok); err != nil || got != ok {
			t.Errorf("Parse(%q) = %q, %v; want it unchanged", ok, got, err)
		}
	}
	for _, bad := range []string{"", "01", " 1", "1 ", "+1", "1.0", "1e0", "１", "1\u200b", "-0", strings.Repeat("z", 129), "users:1\n", "\xff", "1\x00"} {
		if got, err := Parse(bad); err == nil || !errors.Is(err, ErrNotCanonical) {
			t.Errorf("Parse(%q) = %q, %v; want refused", bad, got, err)
		}
	}
}

func FuzzFromJSON(f *testing.F) {
	for _, s := range []string{`42`, `"42"`, `"01"`, `" 1"`, `1.0`, `1e0`, `"１"`, `"1\u200b"`, `-0`, `"usr_9f.A-b:c"`,
		`9223372036854775807`, `9223372036854775808`, `"\ud800"`, `"0x1"`, `"1_0"`, `null`, `"-"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := FromJSON(raw)
		if err != nil {
			if !errors.Is(err, ErrNotCanonical) {
				t.Fatalf("FromJSON(%q) error %v does not match ErrNotCanonical", raw, err)
			}
			return
		}
		if !canonical.MatchString(out) {
			t.Fatalf("FromJSON(%q) = %q: outside the canonical alphabet", raw, out)
		}
		if again, err := Parse(out); err != nil || again != out {
			t.Fatalf("FromJSON(%q) = %q, but Parse of it = %q, %v", raw, out, again, err)
		}
		js, _ := json.Marshal(out)
		if again, err := FromJSON(js); err != nil || again != out {
			t.Fatalf("FromJSON(%q) = %q, but FromJSON(%s) = %q, %v", raw, out, js, again, err)
		}
	})
}
