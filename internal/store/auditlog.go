package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
)

// The audit stream as audit.Log reads it (audit.Stream): events, the
// per-subject and per-actor indexes, and the checkpoint chain.

func records(msgs []redis.XMessage, field string) []audit.Record {
	out := make([]audit.Record, 0, len(msgs))
	for _, m := range msgs {
		raw, _ := m.Values[field].(string)
		out = append(out, audit.Record{ID: m.ID, Raw: raw})
	}
	return out
}

// Events reads events from start to end (stream ids; "-", "+", "(" for an
// exclusive bound), oldest first, at most count.
func (s *Store) Events(ctx context.Context, start, end string, count int64) ([]audit.Record, error) {
	msgs, err := s.rdb.XRangeN(ctx, s.k.audit, start, end, count).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read audit stream: %w", err)
	}
	return records(msgs, fieldEvent), nil
}

// EventsBefore reads events from end down to start, newest first.
func (s *Store) EventsBefore(ctx context.Context, end, start string, count int64) ([]audit.Record, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, s.k.audit, end, start, count).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read audit stream: %w", err)
	}
	return records(msgs, fieldEvent), nil
}

// IndexBefore reads the events of one index (audit's index names) from end
// down to start, newest first: it reads only the index's own entries, then
// those events. Entries whose event retention removed are skipped.
func (s *Store) IndexBefore(ctx context.Context, index, end, start string, count int64) ([]audit.Record, string, error) {
	ids, err := s.rdb.XRevRangeN(ctx, s.k.audit+":idx:"+index, end, start, count).Result()
	if err != nil {
		return nil, "", fmt.Errorf("store: read audit index: %w", err)
	}
	if len(ids) == 0 {
		return nil, "", nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(ids))
	for i, m := range ids {
		cmds[i] = pipe.XRangeN(ctx, s.k.audit, m.ID, m.ID, 1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, "", fmt.Errorf("store: read audit stream: %w", err)
	}
	out := make([]audit.Record, 0, len(ids))
	for _, c := range cmds {
		out = append(out, records(c.Val(), fieldEvent)...)
	}
	return out, ids[len(ids)-1].ID, nil
}

// Follow blocks up to block for events after the stream id after and
// returns up to count of them (none when block passed).
func (s *Store) Follow(ctx context.Context, after string, count int64, block time.Duration) ([]audit.Record, error) {
	res, err := s.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{s.k.audit, after}, Count: count, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: follow audit stream: %w", err)
	}
	var out []audit.Record
	for _, st := range res {
		out = append(out, records(st.Messages, fieldEvent)...)
	}
	return out, nil
}

// Checkpoints reads checkpoints from start to end, oldest first, at most
// count.
func (s *Store) Checkpoints(ctx context.Context, start, end string, count int64) ([]audit.Record, error) {
	msgs, err := s.rdb.XRangeN(ctx, s.key(keyCheckpoints), start, end, count).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read checkpoints: %w", err)
	}
	return records(msgs, fieldCheckpoint), nil
}

// LastCheckpoint returns the newest checkpoint, if any.
func (s *Store) LastCheckpoint(ctx context.Context) (audit.Record, bool, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, s.key(keyCheckpoints), "+", "-", 1).Result()
	if err != nil {
		return audit.Record{}, false, fmt.Errorf("store: read checkpoints: %w", err)
	}
	if len(msgs) == 0 {
		return audit.Record{}, false, nil
	}
	return records(msgs, fieldCheckpoint)[0], true, nil
}

// Sealed returns the highest checkpoint seq ever written (0: none). It is
// never lowered by the service, so a chain that restarts shows.
func (s *Store) Sealed(ctx context.Context) (int64, error) {
	n, err := s.rdb.Get(ctx, s.key(keyCheckpointSeal)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: read checkpoint seal: %w", err)
	}
	return n, nil
}

// appendCheckpointScript: KEYS[1] checkpoint stream, KEYS[2] seal; ARGV[1]
// the stream id of the checkpoint this one follows ("" for none), ARGV[2]
// checkpoint JSON, ARGV[3] its seq.
// Appends only if the newest checkpoint is still the expected one, so two
// instances never fork the chain.
var appendCheckpointScript = lua(`
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local lastID = ''
if #last > 0 then lastID = last[1][1] end
if lastID ~= ARGV[1] then return {$CODE_RACE, lastID} end
local id = redis.call('XADD', KEYS[1], '*', $FIELD_CHECKPOINT, ARGV[2])
local sealed = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[3]) > sealed then redis.call('SET', KEYS[2], ARGV[3]) end
return {$CODE_OK, id}
`)

// AppendCheckpoint appends a checkpoint after the one at prevID ("" for the
// first). It reports false when another writer appended meanwhile.
func (s *Store) AppendCheckpoint(ctx context.Context, prevID string, seq int64, raw []byte) (bool, error) {
	code, _, err := pair(s.run(ctx, appendCheckpointScript, []string{s.key(keyCheckpoints), s.key(keyCheckpointSeal)}, prevID, string(raw), seq))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return false, fmt.Errorf("store: append checkpoint: %w", err)
	}
	return code == codeOK, err
}

// trimScript: KEYS[1] audit stream, KEYS[2] checkpoint stream; ARGV[1] the
// lowest event id kept, ARGV[2] the lowest checkpoint id kept.
// Both streams are trimmed in one step, so a failure never leaves
// checkpoints trimmed without their events or the reverse.
var trimScript = lua(`
local n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
return {$CODE_OK, tostring(n)}
`)

// Trim removes events below eventsMinID and checkpoints below
// checkpointsMinID together, and returns how many events went.
func (s *Store) Trim(ctx context.Context, eventsMinID, checkpointsMinID string) (int64, error) {
	_, n, err := pair(s.run(ctx, trimScript, []string{s.k.audit, s.key(keyCheckpoints)}, eventsMinID, checkpointsMinID))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return 0, fmt.Errorf("store: trim: %w", err)
	}
	var removed int64
	fmt.Sscan(n, &removed)
	return removed, nil
}
