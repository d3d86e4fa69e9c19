package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Log reads the audit stream that the store appends to (one entry per
// event, field "e" = the event's JSON) and its checkpoint stream.
type Log struct {
	rdb         redis.UniversalClient
	stream      string
	checkpoints string
	now         func() time.Time
}

// NewLog returns a reader of the audit stream named stream, with its
// checkpoints in the stream named checkpoints (both under the store's hash
// tag).
func NewLog(rdb redis.UniversalClient, stream, checkpoints string, now func() time.Time) *Log {
	if now == nil {
		now = time.Now
	}
	return &Log{rdb: rdb, stream: stream, checkpoints: checkpoints, now: now}
}

// Entry is one event as stored: its stream id, its raw bytes (what the
// checkpoints hash) and the decoded event.
type Entry struct {
	StreamID string
	Raw      string
	Event    Event
}

func decodeEntry(m redis.XMessage) Entry {
	raw, _ := m.Values["e"].(string)
	e := Entry{StreamID: m.ID, Raw: raw}
	_ = json.Unmarshal([]byte(raw), &e.Event) // a tampered entry still shows, as it is
	return e
}

// Filter selects events. Zero fields select everything.
type Filter struct {
	Actor   string // admin id or email (case-insensitive), as actor or requester
	Subject string // target id, or collection:id
	Type    Type
	Since   time.Time // inclusive
	Until   time.Time // exclusive
}

// Match reports whether e passes f.
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
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !e.Time.Before(f.Until) {
		return false
	}
	return true
}

func actorIs(a Actor, q string) bool {
	return a.ID == q || (a.Email != "" && strings.EqualFold(a.Email, q))
}

// Query limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
	// scanBudget bounds the entries one page reads; a page that finds fewer
	// matches than its limit within it still returns a cursor to go on.
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

// Query returns events matching f, newest first, starting after cursor
// (empty: from the newest). The cursor is a stream position, so pages stay
// correct while events are appended: new events are newer than every page
// already read.
func (l *Log) Query(ctx context.Context, f Filter, limit int, cursor string) (Page, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	end := "+"
	if cursor != "" {
		if !validStreamID(cursor) {
			return Page{}, ErrBadCursor
		}
		end = "(" + cursor
	}
	page := Page{Events: []Event{}}
	scanned := 0
	for scanned < scanBudget {
		msgs, err := l.rdb.XRevRangeN(ctx, l.stream, end, "-", batch).Result()
		if err != nil {
			return Page{}, fmt.Errorf("audit: read: %w", err)
		}
		for i, m := range msgs {
			scanned++
			e := decodeEntry(m)
			if f.Match(e.Event) {
				page.Events = append(page.Events, e.Event)
				if len(page.Events) == limit {
					if i < len(msgs)-1 || len(msgs) == batch {
						id := m.ID
						page.NextCursor = &id
					}
					return page, nil
				}
			}
		}
		if len(msgs) < batch {
			return page, nil // reached the oldest event
		}
		last := msgs[len(msgs)-1].ID
		end = "(" + last
		if scanned >= scanBudget {
			page.NextCursor = &last
		}
	}
	return page, nil
}

func validStreamID(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	return ok && ms != "" && seq != "" && len(s) <= 41 && strings.Trim(ms, "0123456789") == "" && strings.Trim(seq, "0123456789") == ""
}

// Range reads every entry from start (exclusive when prefixed with "(";
// "-" for the oldest) to the newest, oldest first, in batches, calling fn
// for each; fn returning false stops.
func (l *Log) Range(ctx context.Context, start string, fn func(Entry) bool) error {
	for {
		msgs, err := l.rdb.XRangeN(ctx, l.stream, start, "+", batch).Result()
		if err != nil {
			return fmt.Errorf("audit: read: %w", err)
		}
		for _, m := range msgs {
			if !fn(decodeEntry(m)) {
				return nil
			}
		}
		if len(msgs) < batch {
			return nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// Follow calls fn for every entry appended after the stream id after ("$"
// for "from now"), blocking until ctx ends.
func (l *Log) Follow(ctx context.Context, after string, fn func(Entry) error) error {
	for {
		res, err := l.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{l.stream, after}, Count: batch, Block: 5 * time.Second}).Result()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return fmt.Errorf("audit: follow: %w", err)
		}
		for _, s := range res {
			for _, m := range s.Messages {
				if err := fn(decodeEntry(m)); err != nil {
					return err
				}
				after = m.ID
			}
		}
	}
}

// LastID returns the newest entry's stream id, or "0-0" for an empty log.
func (l *Log) LastID(ctx context.Context) (string, error) {
	msgs, err := l.rdb.XRevRangeN(ctx, l.stream, "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("audit: read: %w", err)
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}
