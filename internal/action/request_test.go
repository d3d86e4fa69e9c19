package action

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzDecodeRequest: the decoder never panics, and whatever it accepts is
// exactly one bounded, canonical record id in a named collection with a
// reason and no requester.
func FuzzDecodeRequest(f *testing.F) {
	files, _ := filepath.Glob("testdata/requests/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"data":{"attributes":{"collection_name":"users","ids":[1e400],"values":{"Reason":"x"}}}}`))
	f.Add([]byte(`{"data":{"attributes":{"ids":[null],"values":{"Reason":1}}}}`))
	for _, id := range []string{`"01"`, `" 1"`, `"+1"`, `1.0`, `1e0`, `"\uff11"`, `"1\u200b"`, `-0`, `9223372036854775808`} {
		f.Add([]byte(`{"data":{"attributes":{"collection_name":"users","ids":[` + id + `],"values":{"Reason":"ticket 1234"}}}}`))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRequest(body)
		if err != nil {
			return
		}
		tg, err := req.Data.Attributes.validate(false, nil)
		if err != nil {
			return
		}
		switch {
		case tg.Collection == "", tg.ID == "", tg.Reason == "":
			t.Fatalf("accepted an incomplete target %+v", tg)
		case len(tg.ID) > 128 || strings.ContainsAny(tg.ID, "\x00\r\n "):
			t.Fatalf("accepted id %q", tg.ID)
		case !isCanonical(tg.ID):
			t.Fatalf("accepted id %q, which is not canonical", tg.ID)
		case tg.RequesterID != "":
			t.Fatalf("accepted a raw requester_id %q", tg.RequesterID)
		case len(req.Data.Attributes.IDs) != 1 || req.Data.Attributes.AllRecords:
			t.Fatalf("accepted a selection that is not one record: %s", body)
		case !utf8.ValidString(tg.Reason) && utf8.Valid(body):
			t.Fatalf("reason became invalid UTF-8")
		}
	})
}

// isCanonical is the contract's rule (DESIGN.md 3.7), written out again
// here so the fuzzer checks ident against an independent statement of it.
func isCanonical(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	digits := true
	for i, r := range id {
		switch {
		case r >= '0' && r <= '9':
		case r == '-' && i == 0:
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_', r == '.', r == ':', r == '-':
			digits = false
		default:
			return false
		}
	}
	num := strings.TrimPrefix(id, "-")
	if digits && num != "" && len(num) > 1 && num[0] == '0' {
		return false
	}
	return id != "-0"
}

// TestApprovalIDIsWhatItSigns: an approval is reserved by what it signs,
// not by its spelling: a lenient decoder's reading of a re-spelled
// signature gives the same id, and the canonical text's id is the digest of
// the text (the reservations made before this rule still hold).
func TestApprovalIDIsWhatItSigns(t *testing.T) {
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": 1}).SignedString([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(signed, '.')
	sig, err := base64.RawURLEncoding.DecodeString(signed[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(signed))
	if got, want := approvalID(signed, sig), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("id of the canonical text %s, want its digest %s", got, want)
	}
	last := signed[len(signed)-1]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	respelled := signed[:len(signed)-1] + string(alphabet[strings.IndexByte(alphabet, last)^1])
	lenient, err := base64.RawURLEncoding.DecodeString(respelled[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	if approvalID(respelled, lenient) != approvalID(signed, sig) {
		t.Errorf("a re-spelled signature is another approval")
	}
}
