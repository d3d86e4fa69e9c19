package action

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeRequest: the decoder never panics, and whatever it accepts is
// exactly one bounded, printable record id in a named collection with a
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
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRequest(body)
		if err != nil {
			return
		}
		tg, err := req.Data.Attributes.validate(false)
		if err != nil {
			return
		}
		switch {
		case tg.Collection == "", tg.ID == "", tg.Reason == "":
			t.Fatalf("accepted an incomplete target %+v", tg)
		case len(tg.ID) > maxIDLength || strings.ContainsAny(tg.ID, "\x00\r\n"):
			t.Fatalf("accepted id %q", tg.ID)
		case tg.RequesterID != "":
			t.Fatalf("accepted a raw requester_id %q", tg.RequesterID)
		case len(req.Data.Attributes.IDs) != 1 || req.Data.Attributes.AllRecords:
			t.Fatalf("accepted a selection that is not one record: %s", body)
		case !utf8.ValidString(tg.Reason) && utf8.Valid(body):
			t.Fatalf("reason became invalid UTF-8")
		}
	})
}
