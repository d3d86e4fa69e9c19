package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestReadOnlyMethodHeaders: the forward-auth check reads the method from
// X-Forwarded-Method (Traefik, Caddy, the README's nginx block) and
// X-Original-Method (ingress-nginx); a write in either, or two method
// values (a repeated header, a list, the two headers disagreeing), is 403
// under a read-only session. A full session is never refused. Real
// redis-server, the real route.
func TestReadOnlyMethodHeaders(t *testing.T) {
	d := newDeployment(t, nil)
	ro := d.impersonate(featAda, "users", "42", "ticket 1234: read the invoices", "Read only")
	full := d.impersonate(featAda, "users", "43", "ticket 1235: fix the invoices", "Full access")
	type hdr struct{ name, value string }
	fwd := func(v string) hdr { return hdr{"X-Forwarded-Method", v} }
	orig := func(v string) hdr { return hdr{"X-Original-Method", v} }
	for _, tc := range []struct {
		name    string
		headers []hdr
		want    int // under the read-only session
	}{
		{"no method header (introspection)", nil, 200},
		{"X-Forwarded-Method GET", []hdr{fwd("GET")}, 200},
		{"X-Original-Method GET", []hdr{orig("GET")}, 200},
		{"X-Original-Method HEAD", []hdr{orig("HEAD")}, 200},
		{"both GET", []hdr{fwd("GET"), orig("GET")}, 200},
		{"X-Forwarded-Method POST", []hdr{fwd("POST")}, 403},
		{"X-Original-Method POST alone (ingress-nginx)", []hdr{orig("POST")}, 403},
		{"X-Original-Method delete, lower case", []hdr{orig("delete")}, 403},
		{"the two headers disagree", []hdr{fwd("GET"), orig("POST")}, 403},
		{"the two headers disagree, reads both", []hdr{fwd("GET"), orig("HEAD")}, 403},
		{"X-Forwarded-Method twice: GET then POST", []hdr{fwd("GET"), fwd("POST")}, 403},
		{"X-Forwarded-Method twice: GET then GET", []hdr{fwd("GET"), fwd("GET")}, 403},
		{"X-Original-Method twice", []hdr{orig("GET"), orig("PUT")}, 403},
		{"a list", []hdr{fwd("GET, POST")}, 403},
		{"a list of reads", []hdr{fwd("GET,GET")}, 403},
		{"empty", []hdr{fwd("")}, 403},
		{"blank", []hdr{orig(" ")}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range []struct {
				name string
				c    *http.Cookie
				want int
			}{{"read-only", ro, tc.want}, {"full", full, 200}} {
				req := httptest.NewRequest(http.MethodGet, "/impersonation/session", nil)
				for _, h := range tc.headers {
					req.Header.Add(h.name, h.value)
				}
				req.AddCookie(s.c)
				rec := httptest.NewRecorder()
				d.h.ServeHTTP(rec, req)
				if rec.Code != s.want {
					t.Errorf("%s session: %d, want %d", s.name, rec.Code, s.want)
				}
			}
		})
	}
}
