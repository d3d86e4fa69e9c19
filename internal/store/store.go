// Package store is the only package that speaks Redis, impersonator's only
// system of record. It keeps single-use token ids, sessions, rate counters
// and the audit stream with its checkpoints and indexes, and changes them in
// atomic steps (Lua scripts, one round trip each) that append the audit
// events recording each change. Audit events reach it encoded
// (audit.Encoded): it stores their bytes as they are.
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redisurl"
)

// DefaultPrefix is the prefix of every key. Its braces are a Redis Cluster
// hash tag: all keys of the service live in one slot, so the multi-key
// scripts stay valid on a cluster.
const DefaultPrefix = "{impersonator}"

// Errors of the store. Any other error means Redis failed, and callers fail
// closed.
var (
	// ErrDuplicate: a token id was reserved twice (a random-number failure).
	ErrDuplicate = errors.New("store: token id already reserved")
	// ErrNoSession: the session does not exist (never did, ended, revoked,
	// lapsed).
	ErrNoSession = errors.New("store: no such session")
	// ErrNotReplicated: the change was made on the primary but no replica
	// acknowledged it within the configured time. Callers answer 503.
	ErrNotReplicated = errors.New("store: no replica acknowledged the change in time")
)

// Store is the Redis-backed store. It is safe for concurrent use, and any
// number of Store values (in one process or many) may share one Redis.
type Store struct {
	rdb redis.UniversalClient
	// scripts is where the scripts that wait for no replica run: rdb's
	// autopipeliner (see autoPipeline), or rdb itself.
	scripts  redis.Scripter
	embedded *miniredis.Miniredis
	prefix   string
	now      func() time.Time
	ack      time.Duration
	k        fixedKeys
	// replicas: 0 not yet known, 1 none (standalone: no wait), 2 wait.
	replicas atomic.Int32
	// acks is how many replicas must acknowledge a change.
	acks acks
}

// Options configure a Store.
type Options struct {
	// Prefix of every key: a non-empty {hash tag}. Default DefaultPrefix.
	// Tests use their own prefixes to share one server.
	Prefix string
	// Now is the clock of session deadlines. Default time.Now.
	Now func() time.Time
	// ReplicaAck is how long a state change waits for the primary's
	// replicas to acknowledge it (WAIT) when it has replicas; 0 never waits.
	// See run for how many must.
	ReplicaAck time.Duration
}

// Open connects to the Redis of rawURL (redisurl's forms: single node,
// Sentinel, Cluster). An empty URL starts an embedded, in-process Redis
// (miniredis) on a loopback port: it keeps nothing across restarts and is
// meant for development only.
func Open(rawURL string, o Options) (*Store, error) {
	var emb *miniredis.Miniredis
	if rawURL == "" {
		emb = miniredis.NewMiniRedis()
		if err := emb.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("start embedded redis: %w", err)
		}
		rawURL = "redis://" + emb.Addr()
	}
	client, err := redisurl.NewClient(rawURL)
	if err != nil {
		if emb != nil {
			emb.Close()
		}
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	s, err := newStore(client, o)
	if err != nil {
		client.Close()
		if emb != nil {
			emb.Close()
		}
		return nil, err
	}
	s.embedded = emb
	if emb != nil {
		s.replicas.Store(1) // the embedded Redis never has a replica (nor INFO replication, nor WAIT)
	}
	return s, nil
}

func newStore(rdb redis.UniversalClient, o Options) (*Store, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if !validPrefix(o.Prefix) {
		return nil, fmt.Errorf("store: prefix %q is not a non-empty {hash tag}", o.Prefix)
	}
	s := &Store{rdb: rdb, scripts: autoPipeline(rdb), prefix: o.Prefix, now: o.Now, ack: o.ReplicaAck}
	s.buildKeys()
	return s, nil
}

// autoPipeline returns rdb's autopipeliner (go-redis's, built once per
// client and closed with it), or rdb when it has none. Concurrent requests'
// scripts then reach Redis in batches over one connection, one write and
// one read for many on both sides, instead of one round trip each over as
// many connections; a lone request still takes one round trip. Measured
// with make loadtest (32 connections, 2 cores): mint +14%, login +8%, p99
// of both down a quarter. Each caller still waits for its own answer, and
// an error fails only the batch it was in, whose callers answer 503.
func autoPipeline(rdb redis.UniversalClient) redis.Scripter {
	ap, err := rdb.AutoPipeline()
	if err != nil || ap == nil {
		return rdb
	}
	return deadlineScripter{ap}
}

// validPrefix accepts "{tag}" with a non-empty tag and nothing around it.
func validPrefix(p string) bool {
	return len(p) > 2 && p[0] == '{' && p[len(p)-1] == '}' && !strings.ContainsAny(p[1:len(p)-1], "{}:")
}

// Close closes the client and stops the embedded server, if any.
func (s *Store) Close() error {
	err := s.rdb.Close()
	if s.embedded != nil {
		s.embedded.Close()
	}
	return err
}

// EmbeddedAddr is the address of the embedded Redis, or "" when REDIS_URL
// named a real one. The CLI can reach it there while serve runs.
func (s *Store) EmbeddedAddr() string {
	if s.embedded == nil {
		return ""
	}
	return s.embedded.Addr()
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Persistence describes whether the connected Redis keeps data on disk.
type Persistence struct {
	Known bool // false when the server does not let us ask (CONFIG disabled)
	AOF   bool
	RDB   bool
}

// Durable reports whether the server persists anything.
func (p Persistence) Durable() bool { return p.AOF || p.RDB }

// Persistence asks the server (CONFIG GET) whether it writes to disk.
func (s *Store) Persistence(ctx context.Context) Persistence {
	aof, err := s.rdb.ConfigGet(ctx, "appendonly").Result()
	if err != nil {
		return Persistence{}
	}
	save, err := s.rdb.ConfigGet(ctx, "save").Result()
	if err != nil {
		return Persistence{}
	}
	return Persistence{Known: true, AOF: aof["appendonly"] == "yes", RDB: strings.TrimSpace(save["save"]) != ""}
}

// Replication says whether state changes wait for a replica: "off"
// (ReplicaAck 0), "none" (no replica found: no wait), "wait", or "unknown"
// before the first change.
func (s *Store) Replication(ctx context.Context) string {
	if s.ack == 0 {
		return "off"
	}
	switch s.replicaMode(ctx) {
	case 1:
		return "none"
	case 2:
		return "wait"
	}
	return "unknown"
}

// replicaMode finds out once whether the primary has replicas. A Sentinel
// deployment always waits: its primary has replicas by design, and a new
// primary that has none yet must not answer 200.
func (s *Store) replicaMode(ctx context.Context) int32 {
	if m := s.replicas.Load(); m != 0 {
		return m
	}
	if c, ok := s.rdb.(*redis.Client); ok && c.Options().Addr == "FailoverClient" {
		if info, err := c.Info(ctx, "replication").Result(); err == nil {
			s.acks.observe(replicationInfo(info))
		}
		s.replicas.Store(2)
		return 2
	}
	var info string
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		var node *redis.Client
		if node, err = cc.MasterForKey(ctx, s.key(keyAudit)); err == nil {
			info, err = node.Info(ctx, "replication").Result()
		}
	} else {
		info, err = s.rdb.Info(ctx, "replication").Result()
	}
	var refused redis.Error
	if errors.As(err, &refused) {
		// INFO refused (an ACL): it will stay refused, so stop asking on
		// every change, and wait as if there were replicas.
		s.replicas.Store(2)
		return 2
	}
	if err != nil {
		return 0 // not known yet: ask again at the next change
	}
	s.acks.observe(replicationInfo(info))
	mode := int32(1)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			if n, _ := strconv.Atoi(v); n > 0 {
				mode = 2
			}
		}
	}
	s.replicas.Store(mode)
	return mode
}

// run runs a state-changing script. When the primary has replicas and
// ReplicaAck is set, the script, a WAIT and an INFO replication go down one
// connection together, so the WAIT counts this very change and the INFO
// describes the very node that made it; too few acknowledgements in time is
// ErrNotReplicated.
//
// How many is too few: every replica that node has been seen with, not
// just one. Sentinel promotes a replica without stopping the old primary
// (SENTINEL FAILOVER), and moves the other replicas to the promoted one only
// a moment later (up to a second): meanwhile the old primary still has them,
// a WAIT 1 they answer succeeds, and the change is lost when they resync
// from the promoted replica (measured with WAIT 1: in one switchover with
// two replicas, 144 mints answered 200 lost their audit event and 142
// tokens were redeemed twice; internal/failovertest). A replica that left for its promotion
// therefore keeps counting for the old primary (its replication id).
// Replicas still syncing are not counted, so a replica that rejoins does not
// stop writes while it loads. A primary seen with fewer replicas for
// replicaForget (a replica lost for good) is then asked for fewer.
func (s *Store) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) ([]any, error) {
	// Only a primary known to have no replica skips the wait: while that is
	// unknown (INFO failed), changes wait as if it had one, failing closed.
	if s.ack == 0 || s.replicaMode(ctx) == 1 {
		return sc.Run(ctx, s.scripts, keys, args...).Slice()
	}
	var c redis.Cmdable = s.rdb
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		c = node
	}
	want := s.acks.want()
	res, acked, info, err := s.runAndWait(ctx, c, sc, false, want, keys, args)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		res, acked, info, err = s.runAndWait(ctx, c, sc, true, want, keys, args)
	}
	if err != nil {
		return nil, err
	}
	need := want // INFO refused (an ACL): as many as asked
	if info != "" {
		need = s.acks.observe(replicationInfo(info))
	}
	if acked < int64(need) {
		return res, ErrNotReplicated
	}
	return res, nil
}

func (s *Store) runAndWait(ctx context.Context, c redis.Cmdable, sc *redis.Script, full bool, want int, keys []string, args []any) ([]any, int64, string, error) {
	pipe := c.Pipeline()
	var cmd *redis.Cmd
	if full {
		cmd = sc.Eval(ctx, pipe, keys, args...)
	} else {
		cmd = sc.EvalSha(ctx, pipe, keys, args...)
	}
	wait := pipe.Do(ctx, "WAIT", want, s.ack.Milliseconds())
	infoCmd := pipe.Info(ctx, "replication")
	_, _ = pipe.Exec(ctx)
	res, err := cmd.Slice()
	if err != nil {
		return nil, 0, "", err
	}
	n, err := wait.Int64()
	if err != nil {
		return nil, 0, "", err
	}
	info, _ := infoCmd.Result()
	return res, n, info, nil
}

// replicaForget is how long a primary must be seen with fewer replicas
// before changes on it wait for fewer: far longer than Sentinel takes to
// move the other replicas to a promoted one.
const replicaForget = 30 * time.Second

// acks remembers, for each primary (by replication id: a promoted replica
// gets a new one), the most online replicas it has been seen with.
type acks struct {
	mu   sync.Mutex
	seen map[string]*seenReplicas
	last string // the primary seen last
}

type seenReplicas struct {
	n  int       // the most online replicas seen
	at time.Time // when n was last seen
}

// observe records that the primary replid has online replicas now, and
// returns how many must acknowledge a change on it. An empty replid (not a
// primary, or no INFO) changes nothing.
func (a *acks) observe(replid string, online int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if replid == "" {
		return a.wantLocked()
	}
	now := time.Now()
	if a.seen == nil {
		a.seen = map[string]*seenReplicas{}
	}
	r := a.seen[replid]
	switch {
	case r == nil:
		r = &seenReplicas{n: online, at: now}
		a.seen[replid] = r
	case online >= r.n || now.Sub(r.at) > replicaForget:
		r.n, r.at = online, now
	}
	a.last = replid
	for id, o := range a.seen {
		if id != replid && now.Sub(o.at) > replicaForget {
			delete(a.seen, id)
		}
	}
	return max(1, r.n)
}

// want is how many acknowledgements to wait for: the need of the primary
// seen last, at least one.
func (a *acks) want() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.wantLocked()
}

func (a *acks) wantLocked() int {
	if r := a.seen[a.last]; r != nil {
		return max(1, r.n)
	}
	return 1
}

// replicationInfo reads a primary's replication id and its online replicas
// from INFO replication; a replica's answer has no replication id here.
func replicationInfo(info string) (replid string, online int) {
	primary := false
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "role:master":
			primary = true
		case strings.HasPrefix(line, "master_replid:"):
			replid = strings.TrimPrefix(line, "master_replid:")
		case len(line) > 5 && strings.HasPrefix(line, "slave") && line[5] >= '0' && line[5] <= '9' &&
			strings.Contains(line, "state=online"):
			online++
		}
	}
	if !primary {
		return "", 0
	}
	return replid, online
}

// pair reads a {code, payload} script answer.
func pair(res []any, err error) (int64, string, error) {
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return 0, "", err
	}
	if len(res) != 2 {
		return 0, "", fmt.Errorf("unexpected script answer %v", res)
	}
	code, ok := res[0].(int64)
	if !ok {
		return 0, "", fmt.Errorf("unexpected script code %v", res[0])
	}
	payload, _ := res[1].(string)
	return code, payload, err
}

// eventArgs is how an encoded event travels into a script: its bytes, and
// its index names joined by spaces (audit keeps spaces out of them).
func eventArgs(e audit.Encoded) []any {
	return []any{e.JSON, strings.Join(e.Indexes, " ")} // go-redis sends []byte as is: no copy
}

// luaEmit is prepended to every script that appends audit events: emit
// appends one event to the stream (KEYS[1] of every such script) and its id
// to each of the event's indexes.
//
// One clock (issue 18): the event's "time" is its stream id's time. The
// script takes the Redis server's TIME, makes the next stream id from it
// (never below the newest entry's, so a clock that steps back, or a new
// primary's, still appends in order), writes that millisecond as the
// event's time and appends with that very id. The stored bytes, which the
// checkpoints hash, then say what since/until select by. The event's
// "time" is its first "time" key: the encoder writes it second, after the
// id, and no JSON string can hold an unescaped quote. The explicit full id
// works on every Redis the store runs on (no "ms-*", which needs 7.0); if
// the stream's last id is past its newest entry's (that entry deleted), the
// id continues from XINFO's last-generated-id.
const luaEmit = `
local function isotime(ms)
  local s = math.floor(ms / 1000)
  local frac = ms - s * 1000
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  local out = string.format('%04d-%02d-%02dT%02d:%02d:%02d', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60)
  if frac > 0 then
    local f = (string.gsub(string.format('%03d', frac), '0+$', ''))
    out = out .. '.' .. f
  end
  return out .. 'Z'
end
local function stamped(ev, ms)
  local _, j = string.find(ev, '"time":"', 1, true)
  if not j then return ev end
  local k = string.find(ev, '"', j + 1, true)
  return string.sub(ev, 1, j) .. isotime(ms) .. string.sub(ev, k)
end
local function idparts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function emit(ev, idx)
  local t = redis.call('TIME')
  local ms, seq = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 0
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #top > 0 then
    local tms, tseq = idparts(top[1][1])
    if tms >= ms then ms, seq = tms, tseq + 1 end
  end
  local id = string.format('%d-%d', ms, seq)
  local ok = redis.pcall('XADD', KEYS[1], id, $FIELD_EVENT, stamped(ev, ms))
  if type(ok) == 'table' and ok.err then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local lms, lseq = idparts(info[i + 1])
        if lms >= ms then ms, seq = lms, lseq + 1 end
      end
    end
    id = string.format('%d-%d', ms, seq)
    redis.call('XADD', KEYS[1], id, $FIELD_EVENT, stamped(ev, ms))
  end
  for name in string.gmatch(idx, '[^ ]+') do
    redis.call('XADD', KEYS[1] .. ':idx:' .. name, id, 'i', '')
  end
  return id
end
`

// luaCount is prepended to every script that counts in a fixed window:
// count adds one to the counter key and returns the count, the window's
// time left (ms) and whether this count started the window: at the first
// count, and again should the key have lost its expiry (a PERSIST, a
// restore), so that no window outlives its length.
const luaCount = `
local function count(key, window)
  local n = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if n == 1 or ttl < 0 then
    redis.call('PEXPIRE', key, window)
    return n, tonumber(window), true
  end
  return n, ttl, false
end
`

func ms(t time.Time) int64 { return t.UnixMilli() }
