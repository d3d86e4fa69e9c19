package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Record is one stored entry: its stream id and its raw bytes (what the
// checkpoints hash).
type Record struct {
	ID  string
	Raw string
}

// Stream is what the log needs of its storage (the store implements it):
// ranges of events, the per-subject and per-actor indexes, following new
// events, and the checkpoint chain.
type Stream interface {
	Events(ctx context.Context, start, end string, count int64) ([]Record, error)
	EventsBefore(ctx context.Context, end, start string, count int64) ([]Record, error)
	IndexBefore(ctx context.Context, index, end, start string, count int64) (recs []Record, last string, err error)
	Follow(ctx context.Context, after string, count int64, block time.Duration) ([]Record, error)
	Checkpoints(ctx context.Context, start, end string, count int64) ([]Record, error)
	LastCheckpoint(ctx context.Context) (Record, bool, error)
	AppendCheckpoint(ctx context.Context, prevID string, seq int64, raw []byte) (bool, error)
	Trim(ctx context.Context, eventsMinID, checkpointsMinID string) (int64, error)
	Sealed(ctx context.Context) (int64, error)
	// Append appends one event (audit accept's own).
	Append(ctx context.Context, ev Encoded) (string, error)
}

// Log reads the audit stream and keeps its checkpoints.
type Log struct {
	st  Stream
	now func() time.Time
}

// NewLog returns the log over st.
func NewLog(st Stream, now func() time.Time) *Log {
	if now == nil {
		now = time.Now
	}
	return &Log{st: st, now: now}
}

// Entry is one event as stored: its stream id, its raw bytes and the
// decoded event.
type Entry struct {
	StreamID string
	Raw      string
	Event    Event
}

func decodeEntry(r Record) Entry {
	e := Entry{StreamID: r.ID, Raw: r.Raw}
	_ = json.Unmarshal([]byte(r.Raw), &e.Event) // a tampered entry still shows, as it is
	return e
}

// Filter selects events. Zero fields select everything.
type Filter struct {
	Actor   string // admin id or email (case-insensitive), as actor or requester
	Subject string // target id, or collection:id
	Type    Type
	Since   time.Time // inclusive, by the stream's own clock
	Until   time.Time // exclusive, by the stream's own clock
}

// Match reports whether e passes f's actor, subject and type (the time
// window is the stream range read).
func (f Filter) Match(e Event) bool {
	if f.Actor != "" && !actorIs(e.Actor, f.Actor) && (e.Requester == nil || !actorIs(*e.Requester, f.Actor)) {
		return false
	}
	if f.Subject != "" {
		if c, id, ok := strings.Cut(f.Subject, ":"); ok {
			if e.Subject.Collection != c || e.Subject.ID != id {
				return false
			}
		} else if e.Subject.ID != f.Subject {
			return false
		}
	}
	if f.Type != "" && e.Type != f.Type {
		return false
	}
	return true
}

// index names the index that holds every event f can match, or "".
func (f Filter) index() string {
	if f.Subject != "" {
		if c, id, ok := strings.Cut(f.Subject, ":"); ok {
			return strings.Map(indexRune, subjectIndex(c, id))
		}
		return strings.Map(indexRune, subjectIDIndex(f.Subject))
	}
	if f.Actor != "" {
		return strings.Map(indexRune, actorIndex(f.Actor))
	}
	return ""
}

func actorIs(a Actor, q string) bool {
	return a.ID == q || (a.Email != "" && strings.EqualFold(a.Email, q))
}

// Query limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
	// scanBudget bounds the entries one page reads when only a type
	// filters (no index); a page that finds fewer matches than its limit
	// within it still returns a cursor to go on.
	scanBudget = 20000
	batch      = 500
)

// ErrBadCursor is returned for a cursor that is not a stream id.
var ErrBadCursor = errors.New("cursor is not a cursor of this log")

// Page is one page of events, newest first.
type Page struct {
	Events     []Event `json:"events"`
	NextCursor *string `json:"next_cursor"`
}

// streamID is the first stream id at or after t: stream ids begin with
// the Redis server's time in milliseconds.
func streamID(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) + "-0" }

// streamRange is the stream range f's time window and cursor read: since
// and until are stream ids (the server's clock), and a cursor ends the
// range just before its position.
func (f Filter) streamRange(cursor string) (start, end string, err error) {
	start, end = "-", "+"
	if !f.Since.IsZero() {
		start = streamID(f.Since)
	}
	if !f.Until.IsZero() {
		end = "(" + streamID(f.Until)
	}
	if cursor != "" {
		// A cursor ends the range before it, so 0-0 (in any spelling),
		// before which nothing lies, is refused as Redis would refuse it.
		if !ValidStreamID(cursor) || strings.Trim(cursor, "0-") == "" {
			return "", "", ErrBadCursor
		}
		end = "(" + cursor
	}
	return start, end, nil
}

// readBefore reads up to n entries, newest first, of the stream range
// [start, end), from index when it is not empty (else from the log), and
// returns the stream id of the last position read ("" when none was).
func (l *Log) readBefore(ctx context.Context, index, end, start string, n int64) ([]Record, string, error) {
	var recs []Record
	var last string
	var err error
	if index != "" {
		recs, last, err = l.st.IndexBefore(ctx, index, end, start, n)
	} else if recs, err = l.st.EventsBefore(ctx, end, start, n); len(recs) > 0 {
		last = recs[len(recs)-1].ID
	}
	if err != nil {
		return nil, "", fmt.Errorf("audit: read: %w", err)
	}
	return recs, last, nil
}

// Query returns events matching f, newest first, starting after cursor
// (empty: from the newest). The cursor is a stream position, so pages stay
// correct while events are appended. Since and Until bound the stream range
// read, and a subject or actor reads only its index, so a query costs its
// matches, not the log.
func (l *Log) Query(ctx context.Context, f Filter, limit int, cursor string) (Page, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	start, end, err := f.streamRange(cursor)
	if err != nil {
		return Page{}, err
	}
	page := Page{Events: []Event{}}
	index := f.index()
	scanned := 0
	for {
		// When every entry read matches (an index alone, or only a time
		// window), read no more than the page still needs.
		n := int64(batch)
		if f.Type == "" && (index == "" && f.Actor == "" && f.Subject == "" || index != "" && (f.Actor == "" || f.Subject == "")) {
			n = int64(min(batch, limit-len(page.Events)))
		}
		recs, last, err := l.readBefore(ctx, index, end, start, n)
		if err != nil {
			return Page{}, err
		}
		for i, r := range recs {
			scanned++
			e := decodeEntry(r)
			if !f.Match(e.Event) {
				continue
			}
			page.Events = append(page.Events, e.Event)
			if len(page.Events) == limit {
				if i < len(recs)-1 || last != "" {
					id := r.ID
					page.NextCursor = &id
				}
				return l.trimCursor(ctx, f, index, start, page)
			}
		}
		if last == "" {
			return page, nil // reached the oldest entry of the range
		}
		end = "(" + last
		if index == "" && scanned >= scanBudget {
			page.NextCursor = &last
			return page, nil
		}
	}
}

// trimCursor drops a page's cursor when nothing lies beyond it, so a page
// with a cursor always has more events to follow, and a full page at the
// very end says it is the last.
func (l *Log) trimCursor(ctx context.Context, f Filter, index, start string, p Page) (Page, error) {
	if p.NextCursor == nil || index == "" {
		return p, nil
	}
	recs, _, err := l.st.IndexBefore(ctx, index, "("+*p.NextCursor, start, 1)
	if err != nil {
		return Page{}, fmt.Errorf("audit: read: %w", err)
	}
	if len(recs) == 0 {
		p.NextCursor = nil
	}
	return p, nil
}

// ValidStreamID reports whether s is a Redis stream id ("ms-seq", each a
// decimal number within 64 bits, as Redis reads them).
func ValidStreamID(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	return ok && isUint64(ms) && isUint64(seq)
}

// isUint64 reports whether s is plain decimal digits within 64 bits.
func isUint64(s string) bool {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return false
	}
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// Range reads every entry from start (exclusive when prefixed with "(";
// "-" for the oldest) to the newest, oldest first, in batches, calling fn
// for each; fn returning false stops.
func (l *Log) Range(ctx context.Context, start string, fn func(Entry) bool) error {
	for {
		recs, err := l.st.Events(ctx, start, "+", batch)
		if err != nil {
			return fmt.Errorf("audit: read: %w", err)
		}
		for _, r := range recs {
			if !fn(decodeEntry(r)) {
				return nil
			}
		}
		if len(recs) < batch {
			return nil
		}
		start = "(" + recs[len(recs)-1].ID
	}
}

// LastID returns the newest entry's stream id, or "0-0" for an empty log.
func (l *Log) LastID(ctx context.Context) (string, error) {
	recs, err := l.st.EventsBefore(ctx, "+", "-", 1)
	if err != nil {
		return "", fmt.Errorf("audit: read: %w", err)
	}
	if len(recs) == 0 {
		return "0-0", nil
	}
	return recs[0].ID, nil
}

// ReadAfter returns up to n entries after the stream id after ("" or "-":
// from the oldest), oldest first.
func (l *Log) ReadAfter(ctx context.Context, after string, n int64) ([]Entry, error) {
	start := "-"
	if after != "" && after != "-" {
		start = "(" + after
	}
	recs, err := l.st.Events(ctx, start, "+", n)
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	return entries(recs), nil
}

// WaitAfter blocks up to block for entries after the stream id after and
// returns them (none when block passed).
func (l *Log) WaitAfter(ctx context.Context, after string, block time.Duration) ([]Entry, error) {
	if after == "" || after == "-" {
		after = "0-0"
	}
	recs, err := l.st.Follow(ctx, after, batch, block)
	if err != nil {
		return nil, fmt.Errorf("audit: follow: %w", err)
	}
	return entries(recs), nil
}

func entries(recs []Record) []Entry {
	out := make([]Entry, len(recs))
	for i, r := range recs {
		out[i] = decodeEntry(r)
	}
	return out
}

// CheckpointsAfter returns the summaries of up to n checkpoints after the
// checkpoint stream id after ("": from the first), and the stream id of the
// last one returned (after, when none).
func (l *Log) CheckpointsAfter(ctx context.Context, after string, n int64) ([]Summary, string, error) {
	start := "-"
	if after != "" {
		start = "(" + after
	}
	recs, err := l.st.Checkpoints(ctx, start, "+", n)
	if err != nil {
		return nil, after, err
	}
	out := make([]Summary, 0, len(recs))
	for _, r := range recs {
		c, err := decodeCheckpoint(r)
		if err != nil {
			return nil, after, err
		}
		out = append(out, c.Summary())
		after = r.ID
	}
	return out, after, nil
}

// Walk calls fn for each event matching f, newest first, from just before
// the stream position cursor ("": the newest), until fn returns false or
// the oldest is read. Like Query, a subject or actor reads only its index,
// so a walk costs the matches it reads; reads start small and grow.
func (l *Log) Walk(ctx context.Context, f Filter, cursor string, fn func(Entry) bool) error {
	start, end, err := f.streamRange(cursor)
	if err != nil {
		return err
	}
	index := f.index()
	n := int64(32)
	for {
		recs, last, err := l.readBefore(ctx, index, end, start, n)
		if err != nil {
			return err
		}
		for _, r := range recs {
			e := decodeEntry(r)
			if f.Match(e.Event) && !fn(e) {
				return nil
			}
		}
		if last == "" {
			return nil
		}
		end = "(" + last
		n = min(2*n, batch)
	}
}
