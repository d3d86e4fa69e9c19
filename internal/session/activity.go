package session

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/safetext"
	"github.com/impersonator/impersonator/internal/store"
)

// The activity trail: the session check hands each request it sees during
// an impersonated session to a Recorder, which only appends it to a
// buffer in memory (the check stays as fast as it was: no Redis call, no
// goroutine, one short lock). Every FlushInterval the buffer is written
// to Redis in one pipeline. A crash loses what was buffered: at most the
// last FlushInterval of entries (plus the one flush in flight).

// ActivityStore is what the recorder needs of Redis.
type ActivityStore interface {
	AppendActivity(ctx context.Context, b store.ActivityBatch) error
	ActivityCounts(ctx context.Context, sids []string) ([]int64, error)
}

// Recorder buffers the activity of impersonated sessions and flushes it.
// A nil *Recorder records nothing.
type Recorder struct {
	store    ActivityStore
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	buf     store.ActivityBatch
	pending int

	flushMu sync.Mutex   // one flush at a time (Run's, and Count's)
	dropped atomic.Int64 // entries dropped: the buffer was full (Redis down)
}

// DefaultFlushInterval is how often the recorder writes its buffer: the
// most a crash (kill -9, power loss) can lose is this much of entries.
const DefaultFlushInterval = 200 * time.Millisecond

// maxPending bounds the buffer: with Redis unreachable, entries past it
// are dropped (and counted) rather than held without bound.
const maxPending = 100_000

// Caps of what an entry keeps of the request.
const (
	maxActivityPath   = 512
	maxActivityMethod = 16
)

// NewRecorder returns a recorder writing to st every interval
// (DefaultFlushInterval when 0). Run must be running.
func NewRecorder(st ActivityStore, log *slog.Logger, interval time.Duration) *Recorder {
	if interval <= 0 {
		interval = DefaultFlushInterval
	}
	return &Recorder{store: st, log: log, interval: interval, buf: store.ActivityBatch{}}
}

// Record buffers one request of session sid.
func (rc *Recorder) Record(sid string, e store.ActivityEntry) {
	if rc == nil {
		return
	}
	rc.mu.Lock()
	if rc.pending >= maxPending {
		rc.mu.Unlock()
		rc.dropped.Add(1)
		return
	}
	rc.buf[sid] = append(rc.buf[sid], e)
	rc.pending++
	rc.mu.Unlock()
}

// Dropped is how many entries were dropped because the buffer was full.
func (rc *Recorder) Dropped() int64 { return rc.dropped.Load() }

// Run flushes every interval until ctx ends, then flushes once more (with
// a deadline of its own): a graceful stop loses nothing.
func (rc *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(rc.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := rc.Flush(fctx); err != nil {
				rc.log.Error("activity trail: the last flush failed; its entries are lost", "error", err)
			}
			return
		case <-t.C:
			if err := rc.Flush(ctx); err != nil && ctx.Err() == nil {
				rc.log.Error("activity trail: flush failed; retried at the next one", "error", err)
			}
		}
	}
}

// Flush writes the buffer now. On failure its entries go back to the
// buffer (in front of newer ones, within maxPending) for the next flush.
func (rc *Recorder) Flush(ctx context.Context) error {
	if rc == nil {
		return nil
	}
	rc.flushMu.Lock()
	defer rc.flushMu.Unlock()
	rc.mu.Lock()
	b, n := rc.buf, rc.pending
	rc.buf, rc.pending = store.ActivityBatch{}, 0
	rc.mu.Unlock()
	if n == 0 {
		return nil
	}
	err := rc.store.AppendActivity(ctx, b)
	if err != nil {
		// Back in front of the newer entries, if they all fit; else the
		// failed batch is dropped (counted).
		rc.mu.Lock()
		if rc.pending+n <= maxPending {
			for sid, newer := range rc.buf {
				b[sid] = append(b[sid], newer...)
			}
			rc.buf, rc.pending = b, rc.pending+n
		} else {
			rc.dropped.Add(int64(n))
		}
		rc.mu.Unlock()
	}
	return err
}

// Count returns the number of requests recorded for sid, after writing
// what this instance buffered: the count a session's end event carries.
// Another instance's last FlushInterval of entries may be missing from it.
func (rc *Recorder) Count(ctx context.Context, sid string) (int64, error) {
	if err := rc.Flush(ctx); err != nil {
		return 0, err
	}
	n, err := rc.store.ActivityCounts(ctx, []string{sid})
	if err != nil || len(n) != 1 {
		return 0, err
	}
	return n[0], nil
}

// requestsOf returns a pointer to sid's request count for its end event,
// or nil when there is no recorder or the count cannot be read (the end
// is recorded without it rather than not at all).
func (rc *Recorder) requestsOf(ctx context.Context, sid string) *int64 {
	if rc == nil {
		return nil
	}
	n, err := rc.Count(ctx, sid)
	if err != nil {
		rc.log.Error("activity trail: the session's request count is unknown; its end is recorded without it", "error", err, "sid", sid)
		return nil
	}
	return &n
}

// forwarded returns the method and path a forward-auth proxy passed with
// r (X-Forwarded-Method / X-Original-Method, X-Forwarded-Uri /
// X-Original-URI, without query string or fragment), and whether it
// passed any: a check without them (introspection, the banner) is not a
// request of the app.
func forwarded(r *http.Request) (method, path string, ok bool) {
	m1, m2 := r.Header.Get("X-Forwarded-Method"), r.Header.Get("X-Original-Method")
	u1, u2 := r.Header.Get("X-Forwarded-Uri"), r.Header.Get("X-Original-URI")
	if m1 == "" && m2 == "" && u1 == "" && u2 == "" {
		return "", "", false
	}
	u := stripQuery(u1)
	switch u2 := stripQuery(u2); {
	case u1 == "":
		u = u2
	case u2 != "" && u2 != u:
		u += "|" + u2 // two values (a client's own copy): both, as sent
	}
	method = m1
	switch {
	case m1 == "":
		method = m2
	case m2 != "" && !strings.EqualFold(m1, m2):
		method = m1 + "|" + m2 // two values: both, as sent
	}
	return safetext.Truncate(method, maxActivityMethod), safetext.Truncate(u, maxActivityPath), true
}

// stripQuery is u without its query string and fragment.
func stripQuery(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		return u[:i]
	}
	return u
}

// Decisions an entry records.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
)

// record hands r to the recorder as a request of sess, decided allow or
// deny; a check that is not forward-auth is not recorded.
func (h *Handlers) record(r *http.Request, sid, decision string) {
	if h.activity == nil {
		return
	}
	method, path, ok := forwarded(r)
	if !ok {
		return
	}
	h.activity.Record(sid, store.ActivityEntry{Time: h.now().UTC(), Method: method, Path: path, Decision: decision})
}

// ActivityReader reads a session's trail.
type ActivityReader interface {
	Activity(ctx context.Context, sid string) ([]store.ActivityEntry, int64, error)
	GetSession(ctx context.Context, sid string) (store.Session, error)
}

// ActivityPage is a session's activity trail as the admin API and the CLI
// show it.
type ActivityPage struct {
	SessionID string                `json:"session_id"`
	Requests  int64                 `json:"requests"`  // every request counted
	Entries   []store.ActivityEntry `json:"entries"`   // the first store.MaxActivity, oldest first
	Truncated bool                  `json:"truncated"` // requests past the listed ones were only counted
}

// ReadActivity returns sid's trail; store.ErrNoSession when nothing was
// recorded for it and it is not live (an unknown id, or a session whose
// trail expired).
func ReadActivity(ctx context.Context, st ActivityReader, sid string) (ActivityPage, error) {
	entries, n, err := st.Activity(ctx, sid)
	if err != nil {
		return ActivityPage{}, err
	}
	if n == 0 && len(entries) == 0 {
		if _, err := st.GetSession(ctx, sid); err != nil {
			return ActivityPage{}, err
		}
	}
	return ActivityPage{SessionID: sid, Requests: n, Entries: entries, Truncated: n > int64(len(entries))}, nil
}

// ValidSessionID reports whether sid can be a session id (base64url, as
// token.NewJTI makes them), so a path parameter never names another key.
func ValidSessionID(sid string) bool {
	if sid == "" || len(sid) > 64 {
		return false
	}
	for i := 0; i < len(sid); i++ {
		switch b := sid[i]; {
		case b == '_' || b == '-', '0' <= b && b <= '9', 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z':
		default:
			return false
		}
	}
	return true
}

// ActivityHandler answers GET /v1/sessions/{id}/activity with the
// session's ActivityPage; 404 when there is none, 400 for an id that
// cannot be one.
func ActivityHandler(st ActivityReader) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		sid := chi.URLParam(r, "id")
		if !ValidSessionID(sid) {
			return httpx.Errorf(http.StatusBadRequest, "not a session id", nil)
		}
		page, err := ReadActivity(r.Context(), st, sid)
		switch {
		case errors.Is(err, store.ErrNoSession):
			return httpx.Errorf(http.StatusNotFound, "no activity recorded for this session", err)
		case err != nil:
			return httpx.Unavailable(err)
		}
		httpx.WriteJSON(w, http.StatusOK, page)
		return nil
	}
}
