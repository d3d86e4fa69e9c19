package httpx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"

	"github.com/go-chi/chi/v5"
)

// StatusClientClosed is logged (never sent) for a client that hung up
// before its answer: nginx's 499.
const StatusClientClosed = 499

// Error is an error with an HTTP status and a message safe to show the
// client. Code names the error for shapes that carry a name (Forest's
// JSON:API errors); Cause is logged, never shown. Header is added to the
// answer (Retry-After, WWW-Authenticate).
type Error struct {
	Status  int
	Code    string
	Message string
	Cause   error
	Header  http.Header
	// Level is the level a 4xx is logged at: zero is info; an answer that
	// is the ordinary case (forward-auth's 401 to a request without a
	// session) says debug.
	Level slog.Level
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

// Unavailable is the answer when Redis (or the audit write) fails: the
// service fails closed with a 503.
func Unavailable(cause error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableError", Message: "unavailable", Cause: cause}
}

// BodyError classifies an error met while reading a request body
// truthfully: too large (413), client gone (499), timeout (408). It returns
// nil for other errors (malformed content, the caller's to judge).
func BodyError(r *http.Request, err error) *Error {
	var tooBig *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &tooBig):
		return Errorf(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit), err)
	case errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return Errorf(http.StatusRequestTimeout, "request body not received in time", err)
	case r.Context().Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrBodyReadAfterClose):
		return Errorf(StatusClientClosed, "client closed the request", err)
	}
	return nil
}

// HandlerFunc is a handler that returns its failure instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Shape writes an error's body in one route group's format.
type Shape func(w http.ResponseWriter, e *Error)

// JSONShape writes {"error": message}: login, session, /v1 and public
// routes.
func JSONShape(w http.ResponseWriter, e *Error) {
	WriteJSON(w, e.Status, map[string]string{"error": e.Message})
}

// Adapter turns HandlerFuncs into handlers that answer their errors in
// shape and log each once, with the request id, client IP, route and cause.
// A client that hung up is logged as 499 and written nothing; an error that
// is not an *Error becomes a generic 500 (never a 503: only what the
// handler knows to be an outage is one); a panic becomes a JSON 500 too.
type Adapter struct {
	Log   *slog.Logger
	Shape Shape
	// OnPanic, when set, counts each panic.
	OnPanic func()
}

// Handle adapts h.
func (a Adapter) Handle(h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				if a.OnPanic != nil {
					a.OnPanic()
				}
				a.fail(w, r, &Error{Status: http.StatusInternalServerError, Code: "InternalServerError",
					Message: "internal error", Cause: fmt.Errorf("panic: %v\n%s", p, debug.Stack())})
			}
		}()
		if err := h(w, r); err != nil {
			a.fail(w, r, err)
		}
	})
}

func (a Adapter) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := classify(r, err)
	Log(a.Log, r, e)
	if e.Status == StatusClientClosed {
		if rec, ok := w.(interface{ SetStatus(int) }); ok {
			rec.SetStatus(StatusClientClosed)
		}
		return
	}
	for k, vs := range e.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	a.Shape(w, e)
}

func classify(r *http.Request, err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		if e.Status >= 500 && e.Status != StatusClientClosed && r.Context().Err() != nil && errors.Is(err, context.Canceled) {
			return &Error{Status: StatusClientClosed, Message: "client closed the request", Cause: err}
		}
		return e
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return &Error{Status: StatusClientClosed, Message: "client closed the request", Cause: err}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "InternalServerError", Message: "internal error", Cause: err}
}

// Log logs a failed request once: 5xx at error level, others at info (they
// are the client's doing).
func Log(log *slog.Logger, r *http.Request, e *Error) {
	level := e.Level
	if e.Status >= 500 && e.Status != StatusClientClosed {
		level = slog.LevelError
	}
	route := r.URL.Path
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		route = rc.RoutePattern()
	}
	cause := ""
	if e.Cause != nil {
		cause = e.Cause.Error()
	}
	log.LogAttrs(r.Context(), level, "request failed",
		slog.String("request_id", RequestID(r.Context())),
		slog.String("ip", ClientIP(r.Context())),
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.Int("status", e.Status),
		slog.String("error", e.Message),
		slog.String("cause", cause),
	)
}
