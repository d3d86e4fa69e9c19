package ident

import (
	"encoding/json"
	"strconv"
	"strings"
)

// Kind is how the customer's database reads a collection's ids, as a policy
// declares it (DESIGN.md 3.8). A database compares ids in its own way:
// Postgres's uuid reads "550E8400E29B41D4A716446655440000" as
// "550e8400-e29b-41d4-a716-446655440000", Mongo's ObjectIds are hex in any
// case, MySQL's default collation compares strings without case. A declared
// kind gives each record one spelling (Kind.Parse), and Kind.Key is what two
// spellings of one record share, which the policy's never lists compare.
type Kind string

// The kinds. Undeclared is a collection the policy says nothing about.
const (
	Undeclared          Kind = ""
	Integer             Kind = "integer"
	UUID                Kind = "uuid"
	ObjectID            Kind = "objectid"
	String              Kind = "string"                 // compared without case
	StringCaseSensitive Kind = "string, case-sensitive" // compared byte for byte
)

// Kinds lists the kinds a policy may name, for its error messages.
var Kinds = []Kind{Integer, UUID, ObjectID, String, StringCaseSensitive}

// FromJSON is FromJSON for a collection of kind k: the canonical id of raw,
// or an *Error when raw is not an id of that kind. A declared uuid or
// objectid is read from its JSON string directly (so an unhyphenated UUID
// of digits with a leading zero is still a UUID), then put in its one
// spelling; the other kinds are FromJSON's ids, an integer kind's only
// integers.
func (k Kind) FromJSON(raw json.RawMessage) (string, error) {
	if k == UUID || k == ObjectID {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", refuse(string(raw), "not a JSON string (a %s is text)", k)
		}
		return k.Parse(s)
	}
	id, err := FromJSON(raw)
	if err != nil {
		return "", err
	}
	return k.Parse(id)
}

// Parse returns the one spelling of s as an id of kind k, or an *Error:
// an integer is a canonical decimal int64; a uuid is lower-case and
// hyphenated (8-4-4-4-12), read from any case, with or without hyphens (a
// hyphen only after a group of four digits, as Postgres reads it) and with
// an optional urn:uuid: prefix; an objectid is 24 hex digits, lower case.
// A string kind's id is Parse's canonical id as it is (the case of a
// case-insensitive string is kept: the database ignores it).
func (k Kind) Parse(s string) (string, error) {
	switch k {
	case UUID:
		if u, ok := parseUUID(s, false); ok {
			return u, nil
		}
		return "", refuse(s, "not a UUID (32 hex digits, hyphenated 8-4-4-4-12 or not)")
	case ObjectID:
		if len(s) == 24 && isHex(s) {
			return strings.ToLower(s), nil
		}
		return "", refuse(s, "not an ObjectId (24 hex digits)")
	}
	id, err := Parse(s)
	if err != nil {
		return "", err
	}
	if k == Integer {
		if _, err := strconv.ParseInt(id, 10, 64); err != nil {
			return "", refuse(s, "not an integer (the collection's ids are integers)")
		}
	}
	return id, nil
}

// Key is what every spelling of one record of kind k shares: two ids name
// the same record when their keys are equal. A case-sensitive string is its
// own key. Every other kind, and an undeclared collection, fails safe: the
// key is lower case, and a string that reads as a UUID in any spelling
// (hyphens anywhere, urn:uuid: prefix) is keyed by its canonical form, so a
// lookalike of a never-listed record is refused rather than minted.
func (k Kind) Key(id string) string {
	if k == StringCaseSensitive {
		return id
	}
	if u, ok := parseUUID(id, true); ok {
		return u
	}
	return strings.ToLower(id)
}

// parseUUID reads s as a UUID and returns it lower-case and hyphenated.
// Strictly (loose false), a hyphen may only follow a group of four hex
// digits and never start, end or double; loosely, hyphens are ignored
// wherever they are.
func parseUUID(s string, loose bool) (string, bool) {
	if len(s) >= 9 && strings.EqualFold(s[:9], "urn:uuid:") {
		s = s[9:]
	}
	var hex [32]byte
	n, run := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' {
			if !loose && (run == 0 || run%4 != 0 || i == len(s)-1) {
				return "", false
			}
			run = 0
			continue
		}
		if !isHexByte(c) || n == len(hex) {
			return "", false
		}
		hex[n] = lowerHex(c)
		n++
		run++
	}
	if n != len(hex) {
		return "", false
	}
	h := string(hex[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexByte(s[i]) {
			return false
		}
	}
	return true
}

func isHexByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func lowerHex(c byte) byte {
	if 'A' <= c && c <= 'F' {
		return c + ('a' - 'A')
	}
	return c
}
