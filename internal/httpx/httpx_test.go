package httpx

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		name, remote, xff string
		trusted           []netip.Prefix
		want              string
	}{
		{"peer, no proxies", "203.0.113.9:5555", "", nil, "203.0.113.9"},
		{"spoofed XFF from an untrusted peer is ignored", "203.0.113.9:5555", "1.2.3.4", trusted, "203.0.113.9"},
		{"trusted proxy: right-most untrusted hop", "10.0.0.2:80", "1.2.3.4, 198.51.100.7", trusted, "198.51.100.7"},
		{"trusted chain of proxies", "10.0.0.2:80", "198.51.100.7, 10.0.0.3", trusted, "198.51.100.7"},
		{"trusted proxy without XFF", "10.0.0.2:80", "", trusted, "10.0.0.2"},
		{"garbage XFF from a trusted proxy", "10.0.0.2:80", "not-an-ip", trusted, "10.0.0.2"},
		{"IPv4-mapped IPv6 peer", "[::ffff:203.0.113.9]:5555", "", nil, "203.0.113.9"},
		{"IPv6 peer", "[2001:db8::1]:5555", "", nil, "2001:db8::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			if got := clientIP(r, tc.trusted); got != tc.want {
				t.Errorf("clientIP = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRequestContext(t *testing.T) {
	var id, ip string
	h := RequestContext(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ip = RequestID(r.Context()), ClientIP(r.Context())
	}))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Request-Id", "attacker-chosen")
	h.ServeHTTP(rec, req)
	if id == "" || id == "attacker-chosen" || rec.Header().Get("X-Request-Id") != id {
		t.Errorf("request id = %q (header %q), want a fresh id echoed", id, rec.Header().Get("X-Request-Id"))
	}
	if ip != "192.0.2.1" {
		t.Errorf("client IP = %q, want httptest's 192.0.2.1", ip)
	}
}

type body struct {
	Token string `json:"token"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, ctype, body string
		opts              DecodeOptions
		status            int
	}{
		{"ok", "application/json", `{"token":"x"}`, DecodeOptions{MaxBytes: 100}, 0},
		{"ok with charset", "application/json; charset=utf-8", `{"token":"x"}`, DecodeOptions{MaxBytes: 100}, 0},
		{"vnd+json", "application/vnd.api+json", `{"token":"x"}`, DecodeOptions{MaxBytes: 100}, 0},
		{"no content type", "", `{"token":"x"}`, DecodeOptions{MaxBytes: 100}, 415},
		{"form", "application/x-www-form-urlencoded", `token=x`, DecodeOptions{MaxBytes: 100}, 415},
		{"too large", "application/json", `{"token":"` + strings.Repeat("x", 200) + `"}`, DecodeOptions{MaxBytes: 100}, 413},
		{"unknown field", "application/json", `{"token":"x","admin":true}`, DecodeOptions{MaxBytes: 100}, 400},
		{"unknown field allowed", "application/json", `{"token":"x","admin":true}`, DecodeOptions{MaxBytes: 100, AllowUnknown: true}, 0},
		{"trailing data", "application/json", `{"token":"x"} {}`, DecodeOptions{MaxBytes: 100}, 400},
		{"not JSON", "application/json", `token`, DecodeOptions{MaxBytes: 100}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			var b body
			err := Decode(httptest.NewRecorder(), r, &b, tc.opts)
			if tc.status == 0 {
				if err != nil || b.Token != "x" {
					t.Fatalf("Decode = %v, token %q; want ok", err, b.Token)
				}
				return
			}
			var got *Error
			if !errors.As(err, &got) || got.Status != tc.status {
				t.Fatalf("Decode = %v, want status %d", err, tc.status)
			}
		})
	}
}
