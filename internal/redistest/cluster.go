package redistest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a real Redis Cluster of three masters (no replicas) owned by a
// test, each node on its own loopback port.
type Cluster struct {
	// Addrs are the nodes' host:port addresses; Addrs[i] serves the i-th
	// third of the 16384 hash slots.
	Addrs []string
	// Nodes are the nodes' processes, in the order of Addrs.
	Nodes []*Server
}

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// StartCluster starts three cluster-enabled redis-servers, gives each a third
// of the hash slots and joins them, and returns once every node reports
// cluster_state:ok with the same slot map and a cluster client can write to
// every master. The nodes are killed when the test ends. A missing
// redis-server fails the test.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	if testing.Short() {
		tb.Skip("-short: needs a Redis Cluster")
	}
	quietOnce.Do(func() { redis.SetLogger(quiet{}) })
	c := &Cluster{}
	for range 3 {
		n := &Server{dir: tb.TempDir(), tb: tb, clusterNode: true,
			extra: []string{"--cluster-node-timeout", "5000"}}
		n.launch()
		c.Nodes = append(c.Nodes, n)
		c.Addrs = append(c.Addrs, n.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.create(ctx); err != nil {
		tb.Fatalf("redis cluster: %v\n%s", err, c.logs())
	}
	return c
}

// slotRange returns the first and last hash slot of the i-th of n masters.
func slotRange(i, n int) (lo, hi int64) {
	return int64(i * clusterSlots / n), int64((i+1)*clusterSlots/n - 1)
}

// create does what redis-cli --cluster create does for three masters.
func (c *Cluster) create(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.Nodes))
	for i, n := range c.Nodes {
		clients[i] = nodeClient(n.Addr)
		defer clients[i].Close()
	}
	for i, cl := range clients {
		lo, hi := slotRange(i, len(clients))
		if err := cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER ADDSLOTSRANGE %d %d: %w", c.Addrs[i], lo, hi, err)
		}
		// Distinct epochs up front, as redis-cli does, so the nodes need not
		// resolve a collision after they meet.
		if err := cl.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER SET-CONFIG-EPOCH: %w", c.Addrs[i], err)
		}
	}
	// Every pair meets, rather than waiting for gossip (a random node a
	// second) to introduce the nodes that only met the first.
	for i := range c.Nodes {
		for _, n := range c.Nodes[i+1:] {
			// The cluster bus port must be given: it is not port+10000 here.
			err := clients[i].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.port, n.busPort).Err()
			if err != nil {
				return fmt.Errorf("%s: CLUSTER MEET %s: %w", c.Addrs[i], n.Addr, err)
			}
		}
	}
	for i, cl := range clients {
		err := poll(ctx, c.Addrs[i]+" cluster_state:ok", func(ctx context.Context) error {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_known_nodes") != "3" ||
				infoField(info, "cluster_slots_ok") != strconv.Itoa(clusterSlots) {
				return fmt.Errorf("CLUSTER INFO: cluster_state:%s cluster_known_nodes:%s cluster_slots_ok:%s",
					infoField(info, "cluster_state"), infoField(info, "cluster_known_nodes"),
					infoField(info, "cluster_slots_ok"))
			}
			return c.sameSlots(ctx, cl)
		})
		if err != nil {
			return err
		}
	}
	return poll(ctx, "cluster client writes to every master", c.writeEverywhere)
}

// sameSlots checks that the node of cl sees every master online with the
// slots create assigned it.
func (c *Cluster) sameSlots(ctx context.Context, cl *redis.Client) error {
	shards, err := cl.ClusterShards(ctx).Result()
	if err != nil {
		return err
	}
	if len(shards) != len(c.Addrs) {
		return fmt.Errorf("CLUSTER SHARDS: %d shards, want %d", len(shards), len(c.Addrs))
	}
	for _, sh := range shards {
		if len(sh.Nodes) != 1 || len(sh.Slots) != 1 {
			return fmt.Errorf("CLUSTER SHARDS: shard of %d nodes and %d slot ranges, want 1 and 1",
				len(sh.Nodes), len(sh.Slots))
		}
		n, r := sh.Nodes[0], sh.Slots[0]
		addr := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
		i := slices.Index(c.Addrs, addr)
		if i < 0 || n.Role != "master" || n.Health != "online" {
			return fmt.Errorf("CLUSTER SHARDS: %s role %s health %s", addr, n.Role, n.Health)
		}
		if lo, hi := slotRange(i, len(c.Addrs)); r.Start != lo || r.End != hi {
			return fmt.Errorf("CLUSTER SHARDS: %s has slots %d-%d, want %d-%d", addr, r.Start, r.End, lo, hi)
		}
	}
	return nil
}

// writeEverywhere sets, reads back and deletes through a cluster client one
// key on each master.
func (c *Cluster) writeEverywhere(ctx context.Context) error {
	o, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		return err
	}
	o.MaxRedirects = -1 // a redirect means the nodes still disagree
	cc := redis.NewClusterClient(o)
	defer cc.Close()
	seen := map[string]bool{}
	for i := 0; len(seen) < len(c.Addrs); i++ {
		if i > 1000 {
			return fmt.Errorf("keys reached only the masters %v", seen)
		}
		key := fmt.Sprintf("redistest:ready:{%d}", i)
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return err
		}
		addr := m.Options().Addr
		if seen[addr] {
			continue
		}
		if err := cc.Set(ctx, key, addr, 0).Err(); err != nil {
			return err
		}
		if got, err := cc.Get(ctx, key).Result(); err != nil || got != addr {
			return fmt.Errorf("GET %s = %q, %v; want %q", key, got, err, addr)
		}
		if err := cc.Del(ctx, key).Err(); err != nil {
			return err
		}
		seen[addr] = true
	}
	return nil
}

func (c *Cluster) logs() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "%s: %s\n", n.Addr, n.log())
	}
	return b.String()
}

// URL returns the Cluster URL our store.Open takes (and redis.ParseClusterURL
// parses): the first node as the host, the others as addr parameters, and no
// master_name.
func (c *Cluster) URL() string {
	u := "redis://" + c.Addrs[0]
	for i, a := range c.Addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}
