// Package httpx holds what every handler of the service shares: the request
// context (request id, client IP), one error shape, strict JSON decoding and
// JSON answers.
package httpx

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

type ctxKey struct{}

// requestInfo is what RequestContext puts in a request's context: one
// value, one allocation, on every request's path.
type requestInfo struct{ id, ip string }

func info(ctx context.Context) *requestInfo {
	ri, _ := ctx.Value(ctxKey{}).(*requestInfo)
	if ri == nil {
		return &requestInfo{}
	}
	return ri
}

// RequestID returns the id of the request in ctx.
func RequestID(ctx context.Context) string { return info(ctx).id }

// ClientIP returns the client address of the request in ctx.
func ClientIP(ctx context.Context) string { return info(ctx).ip }

// Header values that never change, shared rather than allocated per
// answer (http.Header.Set would make a new one-element slice each time).
// Nothing appends to or edits a header's values in place.
var (
	hvJSON    = []string{"application/json"}
	hvNoStore = []string{"no-store"}
)

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

func newRequestID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}

// RequestContext gives every request a fresh id (echoed as X-Request-Id; a
// client-sent id is never trusted) and its client IP: the connection's peer,
// unless the peer is in trusted, in which case the right-most X-Forwarded-For
// address that is not itself a trusted proxy.
func RequestContext(trusted []netip.Prefix) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := newRequestID()
			w.Header().Set("X-Request-Id", id)
			ctx := context.WithValue(r.Context(), ctxKey{}, &requestInfo{id: id, ip: clientIP(r, trusted)})
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

func clientIP(r *http.Request, trusted []netip.Prefix) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	if !isTrusted(peer) {
		return peer.String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		if a = a.Unmap(); !isTrusted(a) {
			return a.String()
		}
	}
	return peer.String()
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := EncodeJSON(v)
	if err != nil {
		http.Error(w, `{"error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	WriteEncoded(w, status, body)
}

// EncodeJSON encodes v as WriteJSON writes it: HTML characters unescaped,
// a newline at the end.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteEncoded writes body, encoded by EncodeJSON, with status: what
// WriteJSON writes, for an answer encoded once and served many times.
func WriteEncoded(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = hvJSON
	h["Cache-Control"] = hvNoStore
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// DecodeOptions tune Decode.
type DecodeOptions struct {
	MaxBytes      int64 // required
	AllowUnknown  bool  // ignore unknown fields (wire formats that grow)
	AllowNoHeader bool  // accept a missing Content-Type
}

// Decode reads one JSON value into dst: application/json only, at most
// MaxBytes, no trailing data, unknown fields refused unless allowed. Errors
// are *Error with 4xx statuses (or 499 when the client left) and a message
// safe to show.
func Decode(w http.ResponseWriter, r *http.Request, dst any, o DecodeOptions) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" && !o.AllowNoHeader {
		return Errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json", nil)
	}
	if ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return Errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json", err)
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, o.MaxBytes)
	dec := json.NewDecoder(r.Body)
	if !o.AllowUnknown {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(dst); err != nil {
		if e := BodyError(r, err); e != nil {
			return e
		}
		return Errorf(http.StatusBadRequest, "request body is not valid JSON for this route", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Errorf(http.StatusBadRequest, "request body has data after the JSON value", err)
	}
	return nil
}

// LimitBody caps the request body of every request at n bytes.
func LimitBody(n int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				WriteJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("request body larger than %d bytes", n)})
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, n)
			next.ServeHTTP(w, r)
		})
	}
}
