package action_test

import (
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/ident"
	"github.com/impersonator/impersonator/internal/redistest"
)

// neverKinds are the fuzzed collections: one per id kind that reads two
// spellings as one record (a case-sensitive string has one spelling).
var neverKinds = []struct {
	collection string
	kind       ident.Kind
}{
	{"users", ident.Undeclared},
	{"accounts", ident.UUID},
	{"devices", ident.ObjectID},
	{"tags", ident.String},
	{"orders", ident.Integer},
}

// FuzzNeverList (make fuzz): whatever record and whichever two of its
// spellings, with one in the never list, the other never mints through the
// action route: it is refused, 403 or 400.
func FuzzNeverList(f *testing.F) {
	f.Add([]byte("\x55\x0e\x84\x00\xe2\x9b\x41\xd4\xa7\x16\x44\x66\x55\x44\x00\x00"), uint8(0), uint8(0), uint8(1), uint64(0))
	f.Add([]byte("\x55\x0e\x84\x00\xe2\x9b\x41\xd4\xa7\x16\x44\x66\x55\x44\x00\x00"), uint8(1), uint8(2), uint8(3), uint64(0xffff))
	f.Add([]byte("\x50\x7f\x1f\x77\xbc\xf8\x6c\xd7\x99\x43\x90\x11"), uint8(2), uint8(0), uint8(0), uint64(0xaaaa))
	f.Add([]byte("abc"), uint8(3), uint8(0), uint8(0), uint64(7))
	f.Add([]byte("abc"), uint8(0), uint8(0), uint8(0), uint64(2))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 7}, uint8(4), uint8(0), uint8(1), uint64(0))

	_, url := redistest.EmbeddedURL(f)
	policy := action.DefaultPolicy()
	policy.Rate.N = 0
	policy.IDs = map[string]ident.Kind{}
	for _, k := range neverKinds {
		policy.Collections = append(policy.Collections, k.collection)
		if k.kind != ident.Undeclared {
			policy.IDs[k.collection] = k.kind
		}
	}
	fx := newFixture(f, url, nil, policy)
	f.Fuzz(func(t *testing.T, seed []byte, kindSel, a, b uint8, mask uint64) {
		k := neverKinds[int(kindSel)%len(neverKinds)]
		spell := spellings(k.kind, seed, mask)
		if spell == nil {
			return
		}
		listed, refused := spell[int(a)%len(spell)], spell[int(b)%len(spell)]
		var id string
		if err := jsonUnquote(listed, &id); err != nil {
			return
		}
		cid, err := k.kind.Parse(id) // as the policy file is read
		if err != nil {
			return
		}
		policy.Never = map[string][]string{k.collection: {cid}}
		rec := fx.post(legacyPath, forestJWT(t, authSecret, nodeAdmin()), collectionBody(k.collection, refused))
		if rec.Code != 403 && rec.Code != 400 {
			t.Fatalf("%s (%s) never-lists %s; %s answered %d, want 403 or 400: %s", k.collection, k.kind, cid, refused, rec.Code, rec.Body.String())
		}
	})
}

// spellings returns JSON spellings of one record of kind, made from seed;
// mask chooses which letters are upper case.
func spellings(kind ident.Kind, seed []byte, mask uint64) []string {
	cased := func(s string) string {
		b := []byte(s)
		for i := range b {
			if mask&(1<<(uint(i)%64)) != 0 && 'a' <= b[i] && b[i] <= 'z' {
				b[i] -= 'a' - 'A'
			}
		}
		return string(b)
	}
	q := strconv.Quote
	pad := func(n int) []byte { return append(append([]byte{}, seed...), make([]byte, n)...)[:n] }
	switch kind {
	case ident.UUID, ident.Undeclared:
		if kind == ident.Undeclared && len(seed) > 0 && seed[0]%2 == 1 {
			break // half the undeclared cases are plain strings, below
		}
		h := hex.EncodeToString(pad(16))
		hyph := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
		groups := make([]string, 8)
		for i := range groups {
			groups[i] = h[4*i : 4*i+4]
		}
		return []string{q(hyph), q(cased(hyph)), q(h), q(cased(h)), q("urn:uuid:" + cased(hyph)), q(cased(strings.Join(groups, "-")))}
	case ident.ObjectID:
		h := hex.EncodeToString(pad(12))
		return []string{q(h), q(cased(h)), q(strings.ToUpper(h))}
	case ident.Integer:
		n := int64(binary.BigEndian.Uint64(pad(8)))
		return []string{strconv.FormatInt(n, 10), q(strconv.FormatInt(n, 10))}
	}
	// a string of letters and digits
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	if len(seed) == 0 || len(seed) > 64 {
		return nil
	}
	b := make([]byte, len(seed))
	for i, c := range seed {
		b[i] = alphabet[int(c)%len(alphabet)]
	}
	s := string(b)
	return []string{q(s), q(cased(s)), q(strings.ToUpper(s))}
}

func jsonUnquote(raw string, v *string) error {
	if s, err := strconv.Unquote(raw); err == nil {
		*v = s
		return nil
	}
	_, err := strconv.ParseInt(raw, 10, 64)
	*v = raw
	return err
}
