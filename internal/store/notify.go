package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
)

// Notifications (internal/notify) read the audit stream itself through one
// consumer group shared by every instance, so an event is delivered by one
// instance and a dead instance's events are claimed by another. Beside the
// group the store keeps, per audit event, the delivery state of each URL
// (notify:state:<stream id>, a hash: URL id → state) so that retries go on
// after a restart, and the dead letters (notify:dead, a stream).
//
// A stream entry is acknowledged (XACK) only once every URL was delivered
// or dead-lettered; its state hash goes with the acknowledgement.

// notifyLua builds a notification script: the names of keys.go's
// notification block, then lua's.
func notifyLua(src string) *redis.Script {
	return lua(notifyReplacer.Replace(src))
}

var notifyReplacer = strings.NewReplacer(
	"$GROUP", quote(groupNotify),
	"$STATE_DONE", quote(stateDone),
	"$STATE_DEAD", quote(stateDead),
	"$DEAD_EVENT", quote(fieldDeadEvent),
	"$DEAD_STREAM", quote(fieldDeadStream),
	"$DEAD_URL", quote(fieldDeadURL),
	"$DEAD_TARGET", quote(fieldDeadTarget),
	"$DEAD_ERROR", quote(fieldDeadError),
	"$DEAD_TRIES", quote(fieldDeadTries),
)

// deadLetterMax bounds the dead-letter stream (approximately: MAXLEN ~).
const deadLetterMax = 10000

// NotifyState is the delivery state of one audit event to one URL.
type NotifyState struct {
	// Attempts is how many attempts failed so far.
	Attempts int
	// NextAt is when the next attempt is due.
	NextAt time.Time
	// Done: delivered, or dead-lettered (Dead).
	Done bool
	Dead bool
}

func (st NotifyState) encode() string {
	switch {
	case st.Dead:
		return stateDead
	case st.Done:
		return stateDone
	}
	return "a " + strconv.Itoa(st.Attempts) + " " + strconv.FormatInt(ms(st.NextAt), 10)
}

func decodeNotifyState(v string) NotifyState {
	switch v {
	case stateDone:
		return NotifyState{Done: true}
	case stateDead:
		return NotifyState{Done: true, Dead: true}
	}
	var st NotifyState
	var next int64
	if _, err := fmt.Sscanf(v, "a %d %d", &st.Attempts, &next); err == nil {
		st.NextAt = time.UnixMilli(next)
	}
	return st
}

// DeadLetter is a delivery that finally failed.
type DeadLetter struct {
	ID       string // its dead-letter stream id (set when read)
	EventID  string // the audit event's id, its webhook-id
	StreamID string // the audit event's stream id
	URL      string // the URL, redacted: never its credentials
	Target   string // the URL's id
	Error    string // the last attempt's error
	Attempts int
}

func (s *Store) notifyStateKey(streamID string) string { return s.key(keyNotifyState, streamID) }

// NotifyGroup creates the notifications' consumer group on the audit stream
// if it does not exist: it starts at the stream's end ($), creating the
// stream if needed, so only events appended from now on are notified.
func (s *Store) NotifyGroup(ctx context.Context) error {
	err := s.rdb.XGroupCreateMkStream(ctx, s.key(keyAudit), groupNotify, "$").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("store: create notify group: %w", err)
	}
	return nil
}

// NotifyRead reads up to count audit events no consumer of the group has
// read yet, and makes them consumer's pending entries. It blocks up to
// block (> 0) for one. A missing group (deleted by hand) is created again.
func (s *Store) NotifyRead(ctx context.Context, consumer string, count int64, block time.Duration) ([]audit.Record, error) {
	if block <= 0 {
		block = time.Millisecond // 0 would block forever
	}
	args := &redis.XReadGroupArgs{Group: groupNotify, Consumer: consumer, Streams: []string{s.key(keyAudit), ">"}, Count: count, Block: block}
	res, err := s.rdb.XReadGroup(ctx, args).Result()
	if err != nil && redis.HasErrorPrefix(err, "NOGROUP") {
		if err = s.NotifyGroup(ctx); err == nil {
			res, err = s.rdb.XReadGroup(ctx, args).Result()
		}
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: read notify group: %w", err)
	}
	var out []audit.Record
	for _, st := range res {
		out = append(out, records(st.Messages, fieldEvent)...)
	}
	return out, nil
}

// NotifyClaim moves to consumer up to count pending entries that no
// consumer touched for minIdle (their consumer died: a live one keeps its
// entries fresh with NotifyKeep), scanning from the stream id start ("0-0"
// first). It returns them and where the next scan starts ("0-0": the scan
// went round). Entries whose event was trimmed away are dropped by Redis.
func (s *Store) NotifyClaim(ctx context.Context, consumer string, minIdle time.Duration, start string, count int64) ([]audit.Record, string, error) {
	msgs, next, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: s.key(keyAudit), Group: groupNotify, Consumer: consumer, MinIdle: minIdle, Start: start, Count: count,
	}).Result()
	if err != nil {
		return nil, start, fmt.Errorf("store: claim notify entries: %w", err)
	}
	return records(msgs, fieldEvent), next, nil
}

// notifyKeepScript: KEYS[1] audit stream; ARGV[1] consumer, ARGV[2..] ids.
// Each entry still pending with the consumer has its idle time reset
// (XCLAIM to itself, JUSTID: no delivery counted); the others (acknowledged,
// or claimed by another consumer meanwhile) are returned. One step, so a
// claim between the check and the reset cannot be undone.
var notifyKeepScript = notifyLua(`
local lost = {}
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], $GROUP, ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], $GROUP, ARGV[1], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
`)

// NotifyKeep tells the group that consumer still works on ids, so no other
// consumer claims them, and returns those it no longer holds.
func (s *Store) NotifyKeep(ctx context.Context, consumer string, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(ids)+1)
	args = append(args, consumer)
	for _, id := range ids {
		args = append(args, id)
	}
	lost, err := notifyKeepScript.Run(ctx, s.rdb, []string{s.key(keyAudit)}, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("store: keep notify entries: %w", err)
	}
	return lost, nil
}

// notifyReleaseScript: KEYS[1] audit stream; ARGV[1] consumer, ARGV[2]
// idle (ms), ARGV[3..] ids. Each entry still pending with the consumer is
// marked idle for ARGV[2] (XCLAIM to itself with IDLE, JUSTID), so the
// next claim by another consumer takes it at once.
var notifyReleaseScript = notifyLua(`
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], $GROUP, ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], $GROUP, ARGV[1], 0, ARGV[i], 'IDLE', ARGV[2], 'JUSTID')
    n = n + 1
  end
end
return n
`)

// NotifyRelease hands ids back to the group when consumer stops cleanly:
// they stay pending, marked idle for idle, so another consumer claims them
// on its next pass instead of waiting for them to age.
func (s *Store) NotifyRelease(ctx context.Context, consumer string, ids []string, idle time.Duration) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, 0, len(ids)+2)
	args = append(args, consumer, idle.Milliseconds())
	for _, id := range ids {
		args = append(args, id)
	}
	if err := notifyReleaseScript.Run(ctx, s.rdb, []string{s.key(keyAudit)}, args...).Err(); err != nil {
		return fmt.Errorf("store: release notify entries: %w", err)
	}
	return nil
}

// NotifyStates returns the delivery state of the event at streamID for each
// URL id that has one.
func (s *Store) NotifyStates(ctx context.Context, streamID string) (map[string]NotifyState, error) {
	m, err := s.rdb.HGetAll(ctx, s.notifyStateKey(streamID)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read notify state: %w", err)
	}
	out := make(map[string]NotifyState, len(m))
	for k, v := range m {
		out[k] = decodeNotifyState(v)
	}
	return out, nil
}

// notifyRetryScript: KEYS[1] state hash; ARGV[1] URL id, ARGV[2] state,
// ARGV[3] the hash's lifetime (ms). A state already final is kept.
var notifyRetryScript = notifyLua(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v == $STATE_DONE or v == $STATE_DEAD then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// NotifyRetry records a failed attempt of the event at streamID to the URL
// target: st.Attempts failed so far, the next due at st.NextAt. The state
// lives ttl past its last change (it outlives the retry schedule; it only
// matters while the entry is pending).
func (s *Store) NotifyRetry(ctx context.Context, streamID, target string, st NotifyState, ttl time.Duration) error {
	st.Done, st.Dead = false, false
	err := notifyRetryScript.Run(ctx, s.rdb, []string{s.notifyStateKey(streamID)}, target, st.encode(), ttl.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("store: record notify retry: %w", err)
	}
	return nil
}

// notifyDoneScript: KEYS[1] audit stream, KEYS[2] state hash, KEYS[3]
// dead-letter stream; ARGV[1] stream id, ARGV[2] URL id, ARGV[3] final
// state (ok or dead), ARGV[4] the hash's lifetime (ms), ARGV[5] n, the
// number of URLs, ARGV[6..5+n] their ids, then for a dead letter: event id,
// redacted URL, error, attempts, the dead stream's bound.
// The URL's final state is recorded, the dead letter (once) appended, and
// when every URL is final the entry is acknowledged and its state deleted:
// one step, so a crash never acknowledges an entry with a URL still owed,
// nor writes one dead letter twice. An entry no longer pending (another
// consumer finished it) is left alone and reported acknowledged.
var notifyDoneScript = notifyLua(`
if #redis.call('XPENDING', KEYS[1], $GROUP, ARGV[1], ARGV[1], 1) == 0 then return 1 end
local prev = redis.call('HGET', KEYS[2], ARGV[2])
if prev ~= $STATE_DONE and prev ~= $STATE_DEAD then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  if ARGV[3] == $STATE_DEAD then
    local n = tonumber(ARGV[5])
    local d = 6 + n
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[d + 4], '*',
      $DEAD_EVENT, ARGV[d], $DEAD_STREAM, ARGV[1], $DEAD_URL, ARGV[d + 1],
      $DEAD_TARGET, ARGV[2], $DEAD_ERROR, ARGV[d + 2], $DEAD_TRIES, ARGV[d + 3])
  end
end
for i = 6, 5 + tonumber(ARGV[5]) do
  local v = redis.call('HGET', KEYS[2], ARGV[i])
  if v ~= $STATE_DONE and v ~= $STATE_DEAD then
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
    return 0
  end
end
redis.call('XACK', KEYS[1], $GROUP, ARGV[1])
redis.call('DEL', KEYS[2])
return 1
`)

// NotifyDone records that the event at streamID was delivered to the URL
// target, or, with dead set, that its delivery finally failed (the dead
// letter is appended). When every URL of targets is final the entry is
// acknowledged: it reports whether it was.
func (s *Store) NotifyDone(ctx context.Context, streamID, target string, targets []string, dead *DeadLetter, ttl time.Duration) (bool, error) {
	state := stateDone
	if dead != nil {
		state = stateDead
	}
	args := make([]any, 0, 10+len(targets))
	args = append(args, streamID, target, state, ttl.Milliseconds(), len(targets))
	for _, t := range targets {
		args = append(args, t)
	}
	if dead != nil {
		args = append(args, dead.EventID, dead.URL, dead.Error, dead.Attempts, deadLetterMax)
	}
	acked, err := notifyDoneScript.Run(ctx, s.rdb, []string{s.key(keyAudit), s.notifyStateKey(streamID), s.key(keyNotifyDead)}, args...).Int64()
	if err != nil {
		return false, fmt.Errorf("store: record notify delivery: %w", err)
	}
	return acked == 1, nil
}

// notifyAckScript: KEYS[1] audit stream, KEYS[2..] the state hashes of
// ARGV[1..]. Acknowledges the entries and deletes their state.
var notifyAckScript = notifyLua(`
for i = 1, #ARGV do
  redis.call('XACK', KEYS[1], $GROUP, ARGV[i])
  redis.call('DEL', KEYS[i + 1])
end
return #ARGV
`)

// NotifyAck acknowledges entries that need no delivery (their type is not
// notified, or they cannot be read) or whose URLs are all final.
func (s *Store) NotifyAck(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	keys := make([]string, 0, len(ids)+1)
	keys = append(keys, s.key(keyAudit))
	args := make([]any, 0, len(ids))
	for _, id := range ids {
		keys = append(keys, s.notifyStateKey(id))
		args = append(args, id)
	}
	if err := notifyAckScript.Run(ctx, s.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("store: acknowledge notify entries: %w", err)
	}
	return nil
}

// NotifyLag returns the age, at now, of the oldest audit event the group
// has not finished with: the oldest pending entry, or else the oldest
// entry no consumer has read yet. 0 when there is none.
func (s *Store) NotifyLag(ctx context.Context, now time.Time) (time.Duration, error) {
	key := s.key(keyAudit)
	var oldest string
	p, err := s.rdb.XPending(ctx, key, groupNotify).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("store: notify lag: %w", err)
	}
	if err == nil && p.Count > 0 {
		oldest = p.Lower
	} else {
		groups, err := s.rdb.XInfoGroups(ctx, key).Result()
		if err != nil {
			return 0, fmt.Errorf("store: notify lag: %w", err)
		}
		last := ""
		for _, g := range groups {
			if g.Name == groupNotify {
				last = g.LastDeliveredID
			}
		}
		if last == "" {
			return 0, nil
		}
		msgs, err := s.rdb.XRangeN(ctx, key, "("+last, "+", 1).Result()
		if err != nil {
			return 0, fmt.Errorf("store: notify lag: %w", err)
		}
		if len(msgs) == 0 {
			return 0, nil
		}
		oldest = msgs[0].ID
	}
	msPart, _, _ := strings.Cut(oldest, "-")
	t, err := strconv.ParseInt(msPart, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("store: notify lag: stream id %q", oldest)
	}
	if d := now.Sub(time.UnixMilli(t)); d > 0 {
		return d, nil
	}
	return 0, nil
}

// notifyLeaveScript: KEYS[1] audit stream; ARGV[1] consumer. Deletes the
// consumer from the group only if it holds no pending entry (deleting one
// that does would drop its entries undelivered).
var notifyLeaveScript = notifyLua(`
local p = redis.call('XPENDING', KEYS[1], $GROUP, '-', '+', 1, ARGV[1])
if #p > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], $GROUP, ARGV[1])
`)

// NotifyLeave removes consumer from the group when it holds nothing (a
// clean shutdown); one that still holds entries stays until another
// claims them and NotifyPrune removes it.
func (s *Store) NotifyLeave(ctx context.Context, consumer string) error {
	if err := notifyLeaveScript.Run(ctx, s.rdb, []string{s.key(keyAudit)}, consumer).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("store: leave notify group: %w", err)
	}
	return nil
}

// NotifyPrune removes the group's consumers that hold nothing and were
// idle for longer than idle (instances that died and whose entries were
// claimed), except keep. It returns how many went.
func (s *Store) NotifyPrune(ctx context.Context, idle time.Duration, keep string) (int, error) {
	cs, err := s.rdb.XInfoConsumers(ctx, s.key(keyAudit), groupNotify).Result()
	if err != nil {
		return 0, fmt.Errorf("store: list notify consumers: %w", err)
	}
	n := 0
	for _, c := range cs {
		if c.Name == keep || c.Pending > 0 || c.Idle < idle {
			continue
		}
		if err := s.NotifyLeave(ctx, c.Name); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// NotifyPending returns how many entries each consumer of the group holds.
func (s *Store) NotifyPending(ctx context.Context) (map[string]int64, error) {
	p, err := s.rdb.XPending(ctx, s.key(keyAudit), groupNotify).Result()
	if errors.Is(err, redis.Nil) {
		return map[string]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: notify pending: %w", err)
	}
	if p.Consumers == nil {
		return map[string]int64{}, nil
	}
	return p.Consumers, nil
}

// DeadLetters reads up to count dead letters, oldest first.
func (s *Store) DeadLetters(ctx context.Context, count int64) ([]DeadLetter, error) {
	msgs, err := s.rdb.XRangeN(ctx, s.key(keyNotifyDead), "-", "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read dead letters: %w", err)
	}
	out := make([]DeadLetter, 0, len(msgs))
	for _, m := range msgs {
		str := func(f string) string { v, _ := m.Values[f].(string); return v }
		n, _ := strconv.Atoi(str(fieldDeadTries))
		out = append(out, DeadLetter{ID: m.ID, EventID: str(fieldDeadEvent), StreamID: str(fieldDeadStream), URL: str(fieldDeadURL),
			Target: str(fieldDeadTarget), Error: str(fieldDeadError), Attempts: n})
	}
	return out, nil
}
