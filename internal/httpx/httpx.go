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
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	clientIPKey
)

// RequestID returns the id of the request in ctx.
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey).(string)
	return s
}

// ClientIP returns the client address of the request in ctx.
func ClientIP(ctx context.Context) string {
	s, _ := ctx.Value(clientIPKey).(string)
	return s
}

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
			ctx := context.WithValue(r.Context(), requestIDKey, id)
			ctx = context.WithValue(ctx, clientIPKey, clientIP(r, trusted))
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

// Error is an error with an HTTP status and a message safe to show the
// client. Cause is logged, never shown.
type Error struct {
	Status  int
	Message string
	Cause   error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Message, e.Cause)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

func (e *Error) Unwrap() error { return e.Cause }

// Errorf returns an *Error with status, public message and cause.
func Errorf(status int, message string, cause error) *Error {
	return &Error{Status: status, Message: message, Cause: cause}
}

// AsError turns any error into an *Error; unknown errors become a generic
// 500 that keeps the cause for the log.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Message: "internal error", Cause: err}
}

// LogError logs err once, with the request's id and client IP: 5xx at
// error level, others at info (they are the client's doing).
func LogError(log *slog.Logger, r *http.Request, err *Error) {
	level := slog.LevelInfo
	if err.Status >= 500 {
		level = slog.LevelError
	}
	log.LogAttrs(r.Context(), level, "request failed",
		slog.String("request_id", RequestID(r.Context())),
		slog.String("ip", ClientIP(r.Context())),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", err.Status),
		slog.String("error", err.Error()),
	)
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, `{"error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// Validator is implemented by request bodies that check themselves.
type Validator interface{ Valid() error }

// DecodeOptions tune Decode.
type DecodeOptions struct {
	MaxBytes      int64 // required
	AllowUnknown  bool  // ignore unknown fields (wire formats that grow)
	AllowNoHeader bool  // accept a missing Content-Type
}

// Decode reads one JSON value into dst: application/json only, at most
// MaxBytes, no trailing data, unknown fields refused unless allowed, and
// dst.Valid() when dst implements Validator. Errors are *Error with 4xx
// statuses and a message safe to show.
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
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Errorf(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", o.MaxBytes), err)
		}
		return Errorf(http.StatusBadRequest, "request body is not valid JSON for this route", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Errorf(http.StatusBadRequest, "request body has data after the JSON value", err)
	}
	if v, ok := dst.(Validator); ok {
		if err := v.Valid(); err != nil {
			return Errorf(http.StatusBadRequest, err.Error(), err)
		}
	}
	return nil
}

// LimitBody caps the request body of every request at n bytes.
func LimitBody(n int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				WriteJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "request body too large"})
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, n)
			next.ServeHTTP(w, r)
		})
	}
}
