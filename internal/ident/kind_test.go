package ident

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestKindParse(t *testing.T) {
	const u = "550e8400-e29b-41d4-a716-446655440000"
	for _, tc := range []struct {
		kind      Kind
		raw, want string // want "": refused
	}{
		{UUID, `"550e8400-e29b-41d4-a716-446655440000"`, u},
		{UUID, `"550E8400-E29B-41D4-A716-446655440000"`, u},
		{UUID, `"550e8400e29b41d4a716446655440000"`, u},
		{UUID, `"550E8400E29B41D4A716446655440000"`, u},
		{UUID, `"urn:uuid:550e8400-e29b-41d4-a716-446655440000"`, u},
		{UUID, `"550e-8400-e29b-41d4-a716-4466-5544-0000"`, u}, // Postgres: a hyphen after any group of four
		{UUID, `"01234567012345670123456701234567"`, "01234567-0123-4567-0123-456701234567"},
		{UUID, `"550e8400-e29b-41d4-a716-44665544000"`, ""},   // 31 digits
		{UUID, `"550e8400-e29b-41d4-a716-4466554400000"`, ""}, // 33 digits
		{UUID, `"550e840-0e29b-41d4-a716-446655440000"`, ""},  // a hyphen after 7
		{UUID, `"550e8400--e29b-41d4-a716-446655440000"`, ""},
		{UUID, `"-550e8400e29b41d4a716446655440000"`, ""},
		{UUID, `"550e8400e29b41d4a716446655440000-"`, ""},
		{UUID, `"g50e8400e29b41d4a716446655440000"`, ""},
		{UUID, `42`, ""},
		{ObjectID, `"507f1f77bcf86cd799439011"`, "507f1f77bcf86cd799439011"},
		{ObjectID, `"507F1F77BCF86CD799439011"`, "507f1f77bcf86cd799439011"},
		{ObjectID, `"507f1f77bcf86cd79943901"`, ""},
		{ObjectID, `"507f1f77bcf86cd79943901g"`, ""},
		{Integer, `42`, "42"},
		{Integer, `"42"`, "42"},
		{Integer, `"-7"`, "-7"},
		{Integer, `"042"`, ""},
		{Integer, `"abc"`, ""},
		{Integer, `"99999999999999999999"`, ""},
		{String, `"ABC"`, "ABC"},
		{StringCaseSensitive, `"ABC"`, "ABC"},
		{String, `" abc"`, ""},
		{Undeclared, `"ABC"`, "ABC"},
	} {
		got, err := tc.kind.FromJSON(json.RawMessage(tc.raw))
		switch {
		case tc.want == "" && (err == nil || !errors.Is(err, ErrNotCanonical)):
			t.Errorf("%s FromJSON(%s) = %q, %v; want an ErrNotCanonical", tc.kind, tc.raw, got, err)
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("%s FromJSON(%s) = %q, %v; want %q", tc.kind, tc.raw, got, err, tc.want)
		}
	}
}

func TestKindKey(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		a, b string
		same bool
	}{
		{Undeclared, "550e8400-e29b-41d4-a716-446655440000", "550E8400E29B41D4A716446655440000", true},
		{Undeclared, "550e8400-e29b-41d4-a716-446655440000", "550e8400e29b-41d4a716-446655440000", true},
		{Undeclared, "550e8400-e29b-41d4-a716-446655440000", "urn:uuid:550E8400-e29b-41d4-a716-446655440000", true},
		{Undeclared, "507f1f77bcf86cd799439011", "507F1F77BCF86CD799439011", true},
		{Undeclared, "abc", "ABC", true},
		{String, "abc", "aBc", true},
		{UUID, "550e8400-e29b-41d4-a716-446655440000", "550E8400E29B41D4A716446655440000", true},
		{StringCaseSensitive, "abc", "ABC", false},
		{StringCaseSensitive, "550e8400e29b41d4a716446655440000", "550e8400-e29b-41d4-a716-446655440000", false},
		{Undeclared, "abc", "abd", false},
		{Integer, "1", "10", false},
	} {
		if got := tc.kind.Key(tc.a) == tc.kind.Key(tc.b); got != tc.same {
			t.Errorf("%q: Key(%q) == Key(%q) is %v, want %v", tc.kind, tc.a, tc.b, got, tc.same)
		}
	}
}
