package audit

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/impersonator/impersonator/internal/httpx"
)

// ParseFilter reads the query filters of GET /v1/audit/events (and of the
// CLI): actor, subject, type, since, until (RFC 3339). Errors name the bad
// parameter.
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{Actor: q.Get("actor"), Subject: q.Get("subject"), Type: Type(q.Get("type"))}
	if f.Type != "" && !f.Type.Valid() {
		return f, fmt.Errorf("type %q is not one of %v", f.Type, Types)
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return f, fmt.Errorf("%s %q is not an RFC 3339 time such as 2026-11-25T10:00:00Z", p.name, v)
			}
			*p.dst = t
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, errors.New("since must be before until")
	}
	return f, nil
}

// EventsHandler answers GET /v1/audit/events?actor=&subject=&type=&since=&until=&limit=&cursor=
// with {"events":[…],"next_cursor":…}, newest first.
func EventsHandler(l *Log) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f, err := ParseFilter(q)
		if err != nil {
			httpx.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		limit := DefaultLimit
		if v := q.Get("limit"); v != "" {
			if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > MaxLimit {
				httpx.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("limit must be a number from 1 to %d", MaxLimit)})
				return
			}
		}
		page, err := l.Query(r.Context(), f, limit, q.Get("cursor"))
		if errors.Is(err, ErrBadCursor) {
			httpx.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if err != nil {
			httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "unavailable"})
			return
		}
		httpx.WriteJSON(w, http.StatusOK, page)
	}
}

// VerifyHandler answers GET /v1/audit/verify with the verification Report:
// 200 when the log is intact, 409 when it is not.
func VerifyHandler(l *Log, keys SignatureVerifier) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rep, err := l.Verify(r.Context(), keys)
		if err != nil {
			httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "unavailable"})
			return
		}
		status := http.StatusOK
		if !rep.OK {
			status = http.StatusConflict
		}
		httpx.WriteJSON(w, status, rep)
	}
}
