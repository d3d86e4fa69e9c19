package store

import (
	"context"
	"fmt"
	"time"
)

// allowScript: KEYS[1] counter; ARGV[1] limit, ARGV[2] window in ms.
// A fixed window counter: the first hit of a window starts its expiry.
var allowScript = redisScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
if n > tonumber(ARGV[1]) then return {0, ttl} end
return {1, ttl}
`)

// Allow counts one hit against the limit of n hits per window for the
// counter named by parts (for example "rate", "admin", id) and reports
// whether the hit is within the limit; when it is not, retryAfter says when
// the window ends. The count is kept in Redis, so the limit holds across
// every instance.
func (s *Store) Allow(ctx context.Context, n int, window time.Duration, parts ...string) (ok bool, retryAfter time.Duration, err error) {
	if n <= 0 || window <= 0 {
		return false, 0, fmt.Errorf("store: rate limit needs a positive count and window")
	}
	code, ttl, err := runInts(ctx, allowScript, s.rdb, []string{s.Key(parts...)}, n, window.Milliseconds())
	if err != nil {
		return false, 0, fmt.Errorf("store: rate limit: %w", err)
	}
	return code == 1, time.Duration(ttl) * time.Millisecond, nil
}

// Count returns the hits counted so far in the current window of the
// counter named by parts, without counting one.
func (s *Store) Count(ctx context.Context, parts ...string) (int, error) {
	n, err := s.rdb.Get(ctx, s.Key(parts...)).Int()
	if err != nil && !isNil(err) {
		return 0, fmt.Errorf("store: rate count: %w", err)
	}
	return n, nil
}
