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
// CLI): actor, subject, type, since, until (RFC 3339). canonical, when not
// nil, puts the subject's record id in its one spelling (the same rule as
// the action's), given the subject's collection ("" when the filter names
// none). Errors name the bad parameter.
func ParseFilter(q url.Values, canonical func(collection, id string) (string, error)) (Filter, error) {
	f := Filter{Actor: q.Get("actor"), Subject: q.Get("subject"), Type: Type(q.Get("type"))}
	if f.Type != "" && !f.Type.Valid() {
		return f, fmt.Errorf("type %q is not one of %v", f.Type, Types)
	}
	if f.Subject != "" && canonical != nil {
		c, id, ok := cutSubject(f.Subject)
		cid, err := canonical(c, id)
		if err != nil {
			return f, fmt.Errorf("subject: %v", err)
		}
		f.Subject = cid
		if ok {
			f.Subject = c + ":" + cid
		}
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
			if t.UnixMilli() < 1 { // stream ids start at 1970; Redis refuses a range before
				return f, fmt.Errorf("%s %q is not after 1970-01-01T00:00:00Z", p.name, v)
			}
			*p.dst = t
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, errors.New("since must be before until")
	}
	return f, nil
}

// cutSubject splits "collection:id" (the collection never holds a colon;
// an id may).
func cutSubject(s string) (collection, id string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return "", s, false
}

// EventsHandler answers GET /v1/audit/events?actor=&subject=&type=&since=&until=&limit=&cursor=
// with {"events":[…],"next_cursor":…}, newest first.
func EventsHandler(l *Log, canonical func(collection, id string) (string, error)) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		f, err := ParseFilter(q, canonical)
		if err != nil {
			return httpx.Errorf(http.StatusBadRequest, err.Error(), err)
		}
		limit := DefaultLimit
		if v := q.Get("limit"); v != "" {
			if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > MaxLimit {
				return httpx.Errorf(http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", MaxLimit), err)
			}
		}
		page, err := l.Query(r.Context(), f, limit, q.Get("cursor"))
		return writePage(w, page, err)
	}
}

// writePage answers a read of the log: page, or 400 for a bad cursor, or
// 503 when the log could not be read.
func writePage(w http.ResponseWriter, page any, err error) error {
	if errors.Is(err, ErrBadCursor) {
		return httpx.Errorf(http.StatusBadRequest, err.Error(), err)
	}
	if err != nil {
		return httpx.Unavailable(err)
	}
	httpx.WriteJSON(w, http.StatusOK, page)
	return nil
}

// VerifyHandler answers GET /v1/audit/verify with the verification Report:
// 200 when the log is intact, 409 when it was tampered with or this
// instance's integrity alarm is raised (m, when not nil: what it saw is the
// witness, and its alarm is named), 200 with "ok": false when verification
// could not finish (an unknown key).
func VerifyHandler(l *Log, keys SignatureVerifier, o VerifyOptions, m *Memory) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		o := o // this request's: the witness is read anew each time
		if m != nil {
			wit, err := m.Witness()
			if err != nil {
				return httpx.Unavailable(err)
			}
			o.Witness = append(wit, o.Witness...)
		}
		rep, err := l.Verify(r.Context(), keys, o)
		if err != nil {
			return httpx.Unavailable(err)
		}
		if m != nil {
			if rep.Alarm = m.Alarm(); rep.Alarm != "" {
				rep.OK, rep.Tampered = false, true
				if rep.Problem == "" {
					rep.Problem = "integrity alarm: " + rep.Alarm
				}
			}
		}
		status := http.StatusOK
		if rep.Tampered {
			status = http.StatusConflict
		}
		httpx.WriteJSON(w, status, rep)
		return nil
	}
}
