package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
)

// appendScript: KEYS[1] audit stream; ARGV[1..2] the event.
var appendScript = lua(luaEmit + `
return {$CODE_OK, emit(ARGV[1], ARGV[2])}
`)

// Append writes one audit event on its own (a refusal with nothing else to
// change) and its index entries. It returns the event's stream id.
func (s *Store) Append(ctx context.Context, ev audit.Encoded) (string, error) {
	_, id, err := pair(s.run(ctx, appendScript, []string{s.k.audit}, eventArgs(ev)...))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return "", fmt.Errorf("store: append audit event: %w", err)
	}
	return id, err
}

// countedScript: KEYS[1] audit stream, KEYS[2] counter; ARGV[1] limit,
// ARGV[2] window (ms), ARGV[3..4] the event.
// Counts one failure and checks the limit in one step, with no window
// between them: within the limit the event is appended; over it nothing is
// (a flood cannot flood the log) and the time left is returned.
var countedScript = lua(luaEmit + luaCount + `
local n, ttl = count(KEYS[2], ARGV[2])
if n > tonumber(ARGV[1]) then return {$CODE_RATE, tostring(ttl)} end
return {$CODE_OK, emit(ARGV[3], ARGV[4])}
`)

// AppendCounted appends a failure's event and counts it against l (l.Denied
// is not used). Over the limit, it appends nothing and returns *RateError
// with the time left in the window.
func (s *Store) AppendCounted(ctx context.Context, ev audit.Encoded, l Limit) error {
	if l.N <= 0 || l.Window <= 0 {
		_, err := s.Append(ctx, ev)
		return err
	}
	args := append([]any{l.N, l.Window.Milliseconds()}, eventArgs(ev)...)
	code, payload, err := pair(s.run(ctx, countedScript, []string{s.k.audit, s.key(append([]string{keyRate}, l.Who...)...)}, args...))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return fmt.Errorf("store: counted append: %w", err)
	}
	if code == codeRate {
		ms, _ := strconv.ParseInt(payload, 10, 64)
		return &RateError{RetryAfter: time.Duration(ms) * time.Millisecond}
	}
	return err
}

// FoldedMarker is replaced, in a Fold's summary event, by the number of
// events folded into it.
const FoldedMarker = "FOLDED_COUNT_0000"

// Fold bounds how many events of one kind one actor can append: the first
// N in a window are appended one by one; the rest are counted, and the
// first event after the window is preceded by Summary, whose
// FoldedMarker is replaced by how many were folded.
type Fold struct {
	N       int
	Window  time.Duration
	Who     []string
	Summary audit.Encoded
	// Limit, when set, first counts the event as a failure against it
	// (AppendCounted's counter): past it nothing is appended nor folded,
	// and AppendFolded returns *RateError.
	Limit *Limit
}

// foldScript: KEYS[1] audit stream, KEYS[2] window counter, KEYS[3] folded
// counter, KEYS[4] the failure counter; ARGV[1] N, ARGV[2] window (ms),
// ARGV[3..4] the event, ARGV[5..6] the summary, ARGV[7] the marker, ARGV[8]
// the failure limit (0: none), ARGV[9] its window (ms).
var foldScript = lua(luaEmit + luaCount + `
if tonumber(ARGV[8]) > 0 then
  local f, ttl = count(KEYS[4], ARGV[9])
  if f > tonumber(ARGV[8]) then return {$CODE_RATE, tostring(ttl)} end
end
local n, _, started = count(KEYS[2], ARGV[2])
if started then
  local folded = tonumber(redis.call('GET', KEYS[3]) or '0')
  if folded > 0 then
    redis.call('DEL', KEYS[3])
    local summary = string.gsub(ARGV[5], ARGV[7], tostring(folded))
    emit(summary, ARGV[6])
  end
end
if n > tonumber(ARGV[1]) then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], 86400000)
  return {$CODE_RATE, ''}
end
return {$CODE_OK, emit(ARGV[3], ARGV[4])}
`)

// AppendFolded appends ev unless its actor is past f.N events in f's
// window; then it counts it and reports folded. The count is written as
// one summary event when the next window begins. With f.Limit, the event
// is first counted against it: past it, nothing is appended nor folded and
// the error is *RateError with the time left.
func (s *Store) AppendFolded(ctx context.Context, ev audit.Encoded, f Fold) (folded bool, err error) {
	who := append([]string{keyRate, "fold"}, f.Who...)
	args := append([]any{f.N, f.Window.Milliseconds()}, eventArgs(ev)...)
	args = append(args, eventArgs(f.Summary)...)
	args = append(args, FoldedMarker)
	limitKey, limit, window := s.k.noRate, 0, int64(0)
	if l := f.Limit; l != nil && l.N > 0 && l.Window > 0 {
		limitKey, limit, window = s.key(append([]string{keyRate}, l.Who...)...), l.N, l.Window.Milliseconds()
	}
	args = append(args, limit, window)
	code, payload, err := pair(s.run(ctx, foldScript, []string{s.k.audit, s.key(who...), s.key(append(who, "folded")...), limitKey}, args...))
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return false, fmt.Errorf("store: folded append: %w", err)
	}
	if code == codeRate && limit > 0 && payload != "" {
		ms, _ := strconv.ParseInt(payload, 10, 64)
		return false, &RateError{RetryAfter: time.Duration(ms) * time.Millisecond}
	}
	return code == codeRate, err
}
