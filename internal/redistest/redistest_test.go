package redistest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/redistest"
)

func TestServerStopRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.StartServer(t)
	c := srv.Client(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	once := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer once.Close()
	if err := once.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered after Stop")
	}
	srv.Restart()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS k after Restart = %d, %v; want 0 (no persistence)", n, err)
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	cl := redistest.StartCluster(t)
	t.Logf("cluster up in %v: %s", time.Since(start).Round(time.Millisecond), cl.URL())

	o, err := redis.ParseClusterURL(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Addrs, cl.Addrs) {
		t.Fatalf("ParseClusterURL(%s).Addrs = %v, want %v", cl.URL(), o.Addrs, cl.Addrs)
	}
	cc := redis.NewClusterClient(o)
	defer cc.Close()

	const keys = 200
	for i := range keys {
		if err := cc.Set(ctx, fmt.Sprintf("key:%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex // ForEachMaster runs the masters concurrently
	perMaster := map[string]int64{}
	var total int64
	err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		perMaster[m.Options().Addr] = n
		total += n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(perMaster) != 3 || total != keys {
		t.Fatalf("keys per master = %v, want %d keys over 3 masters", perMaster, keys)
	}
	for addr, n := range perMaster {
		if !slices.Contains(cl.Addrs, addr) || n == 0 {
			t.Fatalf("keys per master = %v, want some on each of %v", perMaster, cl.Addrs)
		}
	}

	// Two keys sharing a hash tag live in one slot, so one script may use
	// both; keys in different slots may not share a script.
	script := redis.NewScript(`
		redis.call('SET', KEYS[1], ARGV[1])
		redis.call('SET', KEYS[2], ARGV[2])
		return redis.call('MGET', KEYS[1], KEYS[2])`)
	got, err := script.Run(ctx, cc, []string{"{user:7}:a", "{user:7}:b"}, "A", "B").StringSlice()
	if err != nil || !slices.Equal(got, []string{"A", "B"}) {
		t.Fatalf("script on {user:7}:a and {user:7}:b = %v, %v; want [A B]", got, err)
	}
	if _, err := script.Run(ctx, cc, []string{"user:7:a", "user:8:b"}, "A", "B").Result(); err == nil ||
		!strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("script on keys in two slots: err %v, want CROSSSLOT", err)
	}
}

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	s := redistest.StartSentinel(t, 1)
	t.Logf("sentinel up in %v: %s", time.Since(start).Round(time.Millisecond), s.URL())

	o, err := redis.ParseFailoverURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	if o.MasterName != s.MasterName || !slices.Equal(o.SentinelAddrs, s.SentinelAddrs) {
		t.Fatalf("ParseFailoverURL(%s) = %s %v, want %s %v",
			s.URL(), o.MasterName, o.SentinelAddrs, s.MasterName, s.SentinelAddrs)
	}
	c := redis.NewFailoverClient(o)
	defer c.Close()

	old, err := s.PrimaryAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if old != s.Nodes[0].Addr {
		t.Fatalf("PrimaryAddr = %s, want the first node %s", old, s.Nodes[0].Addr)
	}
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The write must reach the replica before it is promoted.
	oldc := node(t, old)
	if n, err := oldc.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v", n, err)
	}

	start = time.Now()
	if err := s.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	primary, err := s.WaitForNewPrimary(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover from %s to %s in %v", old, primary, time.Since(start).Round(time.Millisecond))
	if primary != s.Nodes[1].Addr {
		t.Fatalf("new primary %s, want the replica %s", primary, s.Nodes[1].Addr)
	}

	// The old primary is turned into a replica of the new one. Until then it
	// still takes writes (from clients that have not heard of the switch).
	start = time.Now()
	if err := s.WaitReplica(ctx, old); err != nil {
		t.Fatal(err)
	}
	t.Logf("old primary a replica in %v", time.Since(start).Round(time.Millisecond))
	if err := oldc.Set(ctx, "x", "1", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "READONLY") {
		t.Fatalf("SET on the old primary: err %v, want READONLY", err)
	}

	writeThrough(ctx, t, c, "after", "2")
	newc := node(t, primary)
	for key, want := range map[string]string{"before": "1", "after": "2"} {
		if got, err := newc.Get(ctx, key).Result(); err != nil || got != want {
			t.Fatalf("GET %s on the new primary = %q, %v; want %q", key, got, err, want)
		}
	}
	if role := role(ctx, t, newc); role != "master" {
		t.Fatalf("new primary %s has role %s", primary, role)
	}
	// And the old primary, now a replica, gets the write.
	err = poll(ctx, func() error {
		if got, err := oldc.Get(ctx, "after").Result(); err != nil || got != "2" {
			return fmt.Errorf("GET after on the old primary = %q, %v; want 2", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSentinelKillPrimary(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := redistest.StartSentinel(t, 2)
	c := s.Client(t)
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Wait(ctx, 2, 5*time.Second).Result(); err != nil || n != 2 {
		t.Fatalf("WAIT 2 = %d, %v", n, err)
	}

	start := time.Now()
	old := s.KillPrimary()
	primary, err := s.WaitForNewPrimary(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after kill -9 of %s, %s primary in %v", old, primary, time.Since(start).Round(time.Millisecond))
	writeThrough(ctx, t, c, "after", "2")
	if got, err := node(t, primary).Get(ctx, "before").Result(); err != nil || got != "1" {
		t.Fatalf("GET before on the new primary = %q, %v; want 1", got, err)
	}

	// The old primary comes back as a replica of the new one, with the data.
	start = time.Now()
	s.RestartNode(old)
	t.Logf("old primary back as a replica in %v", time.Since(start).Round(time.Millisecond))
	oldc := node(t, old)
	if role := role(ctx, t, oldc); role != "slave" {
		t.Fatalf("restarted old primary has role %s", role)
	}
	// RestartNode waited for the full sync, which carries "after".
	if got, err := oldc.Get(ctx, "after").Result(); err != nil || got != "2" {
		t.Fatalf("GET after on the restarted old primary = %q, %v; want 2", got, err)
	}
	// The other replica follows the new primary too.
	for _, n := range s.Nodes {
		if n.Addr != primary {
			if err := s.WaitReplica(ctx, n.Addr); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// poll calls f until it returns nil or ctx ends, and returns its last error.
func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// writeThrough sets key through the failover client, retrying while the
// client still finds the old primary.
func writeThrough(ctx context.Context, t *testing.T, c *redis.Client, key, value string) {
	t.Helper()
	var err error
	for range 200 {
		if err = c.Set(ctx, key, value, 0).Err(); err == nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("SET %s through the failover client: %v", key, err)
}

func node(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

func role(ctx context.Context, t *testing.T, c *redis.Client) string {
	t.Helper()
	r, err := c.Do(ctx, "ROLE").Slice()
	if err != nil || len(r) == 0 {
		t.Fatalf("ROLE = %v, %v", r, err)
	}
	s, _ := r[0].(string)
	return s
}
