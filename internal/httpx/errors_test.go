package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestAdapter: one boundary for every failure: *Error answers as it says,
// an unknown error is a generic 500 (never a 503), a panic is a JSON 500,
// a client that hung up is logged as 499 and written nothing, and each is
// logged once with its cause.
func TestAdapter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		h        HandlerFunc
		cancel   bool
		status   int    // written; 0: nothing written
		body     string // substring of the answer
		logged   int
		logCause string
	}{
		{"public error", func(w http.ResponseWriter, r *http.Request) error {
			return &Error{Status: 429, Message: "too_many_requests", Cause: errors.New("ip 192.0.2.1 over 30/m"), Header: http.Header{"Retry-After": {"17"}}}
		}, false, 429, `{"error":"too_many_requests"}`, 429, "over 30/m"},
		{"unknown error", func(w http.ResponseWriter, r *http.Request) error {
			return errors.New("redis: connection refused at 10.0.0.5")
		}, false, 500, `{"error":"internal error"}`, 500, "10.0.0.5"},
		{"outage", func(w http.ResponseWriter, r *http.Request) error {
			return Unavailable(errors.New("dial tcp: refused"))
		}, false, 503, `{"error":"unavailable"}`, 503, "refused"},
		{"panic", func(w http.ResponseWriter, r *http.Request) error {
			panic("nil map")
		}, false, 500, `{"error":"internal error"}`, 500, "panic: nil map"},
		{"client gone", func(w http.ResponseWriter, r *http.Request) error {
			<-r.Context().Done()
			return Unavailable(r.Context().Err())
		}, true, 0, "", 499, "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			panics := 0
			a := Adapter{Log: slog.New(slog.NewJSONHandler(&logBuf, nil)), Shape: JSONShape, OnPanic: func() { panics++ }}
			ctx, cancel := context.WithCancel(context.Background())
			if tc.cancel {
				cancel()
			} else {
				defer cancel()
			}
			req := httptest.NewRequest(http.MethodGet, "/x", nil).WithContext(ctx)
			rec := httptest.NewRecorder()
			a.Handle(tc.h).ServeHTTP(rec, req)
			if tc.status == 0 {
				if rec.Body.Len() != 0 {
					t.Errorf("wrote %q to a client that left", rec.Body.String())
				}
			} else if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
				t.Errorf("answer = %d %s, want %d %s", rec.Code, rec.Body.String(), tc.status, tc.body)
			}
			if strings.Contains(rec.Body.String(), tc.logCause) && tc.logCause != "" && tc.status != 0 {
				t.Errorf("the cause %q reached the client: %s", tc.logCause, rec.Body.String())
			}
			lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
			if len(lines) != 1 {
				t.Fatalf("logged %d lines, want exactly one: %s", len(lines), logBuf.String())
			}
			var rec1 struct {
				Status int    `json:"status"`
				Cause  string `json:"cause"`
			}
			if err := json.Unmarshal([]byte(lines[0]), &rec1); err != nil || rec1.Status != tc.logged || !strings.Contains(rec1.Cause, tc.logCause) {
				t.Errorf("log = %s, want status %d and cause %q", lines[0], tc.logged, tc.logCause)
			}
			if tc.name == "panic" && panics != 1 {
				t.Errorf("panic counted %d times, want 1", panics)
			}
			if tc.name == "public error" && rec.Header().Get("Retry-After") != "17" {
				t.Errorf("Retry-After = %q, want 17", rec.Header().Get("Retry-After"))
			}
		})
	}
}

type slowReader struct{ d time.Duration }

func (s slowReader) Read([]byte) (int, error) { time.Sleep(s.d); return 0, errTimeout{} }

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

// TestBodyError: a body read failure is told truthfully: too large, client
// gone, or timeout; anything else is the caller's to judge.
func TestBodyError(t *testing.T) {
	big := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("x", 100)))
	_, err := io.ReadAll(http.MaxBytesReader(httptest.NewRecorder(), big.Body, 10))
	if e := BodyError(big, err); e == nil || e.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("too large = %v, want 413", e)
	}
	slow := httptest.NewRequest(http.MethodPost, "/", slowReader{})
	_, err = io.ReadAll(slow.Body)
	if e := BodyError(slow, err); e == nil || e.Status != http.StatusRequestTimeout {
		t.Errorf("timeout = %v, want 408", e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gone := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("")).WithContext(ctx)
	if e := BodyError(gone, io.ErrUnexpectedEOF); e == nil || e.Status != StatusClientClosed {
		t.Errorf("client gone = %v, want 499", e)
	}
	ok := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(""))
	if e := BodyError(ok, errors.New("invalid character")); e != nil {
		t.Errorf("a malformed body = %v, want nil (not a read failure)", e)
	}
}
