package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The activity trail: each request the session check sees during an
// impersonated session, kept against the session. Per session, a list
// holds the first MaxActivity entries and a counter counts every request;
// both expire ActivityRetention after the last one recorded.

// Activity bounds.
const (
	// MaxActivity is how many requests of one session are kept one by
	// one; past it, they are only counted.
	MaxActivity = 1000
	// ActivityRetention is how long a session's trail is kept after its
	// last recorded request. The session's end event keeps its count for
	// as long as the audit log.
	ActivityRetention = 30 * 24 * time.Hour
)

// ActivityEntry is one request of an impersonated session.
type ActivityEntry struct {
	Time     time.Time `json:"time"`
	Method   string    `json:"method"`
	Path     string    `json:"path"`
	Decision string    `json:"decision"` // allow or deny
}

// ActivityBatch is what one flush appends: the entries of each session,
// in the order they were seen.
type ActivityBatch map[string][]ActivityEntry

// AppendActivity appends a batch in one pipeline (one round trip): per
// session, the entries pushed and the list trimmed back to its first
// MaxActivity, the counter increased by every entry, and both keys'
// expiry renewed.
func (s *Store) AppendActivity(ctx context.Context, b ActivityBatch) error {
	if len(b) == 0 {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sid, entries := range b {
			if len(entries) == 0 {
				continue
			}
			list, count := s.key(keyActivity, sid), s.key(keyActivityCount, sid)
			vals := make([]any, len(entries))
			for i, e := range entries {
				j, err := json.Marshal(e)
				if err != nil {
					return err
				}
				vals[i] = j
			}
			p.RPush(ctx, list, vals...)
			p.LTrim(ctx, list, 0, MaxActivity-1)
			p.IncrBy(ctx, count, int64(len(entries)))
			p.PExpire(ctx, list, ActivityRetention)
			p.PExpire(ctx, count, ActivityRetention)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: append activity: %w", err)
	}
	return nil
}

// Activity returns a session's recorded requests (the first MaxActivity)
// and how many requests were counted in all.
func (s *Store) Activity(ctx context.Context, sid string) ([]ActivityEntry, int64, error) {
	var lr *redis.StringSliceCmd
	var cr *redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		lr = p.LRange(ctx, s.key(keyActivity, sid), 0, MaxActivity-1)
		cr = p.Get(ctx, s.key(keyActivityCount, sid))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, fmt.Errorf("store: activity: %w", err)
	}
	n, err := cr.Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, fmt.Errorf("store: activity count: %w", err)
	}
	out := make([]ActivityEntry, 0, len(lr.Val()))
	for _, raw := range lr.Val() {
		var e ActivityEntry
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			return nil, 0, fmt.Errorf("store: activity of %s: %w", sid, err)
		}
		out = append(out, e)
	}
	return out, n, nil
}

// ActivityCounts returns the number of requests counted for each session
// (0 for one with none), in order.
func (s *Store) ActivityCounts(ctx context.Context, sids []string) ([]int64, error) {
	if len(sids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(sids))
	for i, sid := range sids {
		keys[i] = s.key(keyActivityCount, sid)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("store: activity counts: %w", err)
	}
	out := make([]int64, len(sids))
	for i, v := range vals {
		if str, ok := v.(string); ok {
			fmt.Sscan(str, &out[i])
		}
	}
	return out, nil
}
