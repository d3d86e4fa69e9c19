package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a real primary with replicas, watched by three Redis Sentinels
// with a quorum of two, all owned by a test and on loopback ports. Its
// methods are meant for the test's own goroutine.
type Sentinel struct {
	// MasterName is the name the Sentinels monitor the primary under.
	MasterName string
	// SentinelAddrs are the Sentinels' host:port addresses.
	SentinelAddrs []string
	// Sentinels are the Sentinel processes, in the order of SentinelAddrs.
	Sentinels []*Server
	// Nodes are the data nodes' processes: Nodes[0] started as the primary,
	// the others as its replicas. Which one is the primary now, ask
	// PrimaryAddr. To bring a stopped node back, use RestartNode, which gives
	// it the right role (Server.Restart would restart it in its first role).
	Nodes []*Server

	tb testing.TB
}

// Sentinel timings: a node is down after a second without answering, and
// the Sentinels look, talk and ask more often than their defaults, so a
// failover takes a few seconds rather than tens of seconds.
const (
	sentinelDownAfter       = 1000 // ms
	sentinelFailoverTimeout = 3000 // ms
)

// sentinelDebug are SENTINEL DEBUG settings (milliseconds): INFO to the
// nodes, hello messages to the other Sentinels and down-state questions
// every 250 ms instead of every 10, 2 and 1 s. The publish period also sets
// how long a Sentinel waits (4 periods) before turning a stray primary, such
// as the old primary after a failover, into a replica.
var sentinelDebug = []any{
	"SENTINEL", "DEBUG",
	"info-period", 250, "publish-period", 250, "ask-period", 250, "ping-period", 250,
	"tilt-period", 5000,
}

// StartSentinel starts a primary, replicas replicas of it and three
// Sentinels monitoring it, and returns once every replica's link to the
// primary is up and every Sentinel knows the primary, all its replicas and
// the two other Sentinels. The processes are killed when the test ends. A
// missing redis-server fails the test.
func StartSentinel(tb testing.TB, replicas int) *Sentinel {
	tb.Helper()
	if testing.Short() {
		tb.Skip("-short: needs Redis Sentinel")
	}
	quietOnce.Do(func() { redis.SetLogger(quiet{}) })
	if replicas < 0 {
		tb.Fatalf("StartSentinel: %d replicas", replicas)
	}
	s := &Sentinel{MasterName: "redistest", tb: tb}
	primary := s.dataNode("")
	for range replicas {
		s.dataNode(primary.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range s.Nodes[1:] {
		if err := s.waitReplicaOf(ctx, n.Addr, primary.Addr); err != nil {
			tb.Fatalf("redis sentinel: %v\n%s", err, s.logs())
		}
	}
	conf := fmt.Sprintf("sentinel resolve-hostnames no\n"+
		"sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
		"sentinel down-after-milliseconds %[1]s %[3]d\n"+
		"sentinel failover-timeout %[1]s %[4]d\n",
		s.MasterName, primary.port, sentinelDownAfter, sentinelFailoverTimeout)
	for range 3 {
		n := &Server{dir: tb.TempDir(), tb: tb, sentinelConf: conf,
			ready: func(ctx context.Context, n *Server) error {
				c := nodeClient(n.Addr)
				defer c.Close()
				return c.Do(ctx, sentinelDebug...).Err()
			}}
		n.launch()
		s.Sentinels = append(s.Sentinels, n)
		s.SentinelAddrs = append(s.SentinelAddrs, n.Addr)
	}
	for _, addr := range s.SentinelAddrs {
		err := poll(ctx, "sentinel "+addr+" knows all", func(ctx context.Context) error {
			return s.sentinelReady(ctx, addr, primary.Addr, replicas)
		})
		if err != nil {
			tb.Fatalf("redis sentinel: %v\n%s", err, s.logs())
		}
	}
	return s
}

// dataNode starts a primary (replicaOf "") or a replica of replicaOf.
func (s *Sentinel) dataNode(replicaOf string) *Server {
	n := &Server{dir: s.tb.TempDir(), tb: s.tb}
	n.extra = nodeArgs(replicaOf)
	n.launch()
	s.Nodes = append(s.Nodes, n)
	return n
}

// nodeArgs returns the command-line options of a data node.
func nodeArgs(replicaOf string) []string {
	// No five-second wait before a full sync to a new replica.
	args := []string{"--repl-diskless-sync-delay", "0"}
	if replicaOf != "" {
		host, port, _ := net.SplitHostPort(replicaOf)
		args = append(args, "--replicaof", host, port)
	}
	return args
}

// sentinelReady checks that the Sentinel at addr monitors primary, sees it up
// with replicas healthy replicas, and knows the two other Sentinels.
func (s *Sentinel) sentinelReady(ctx context.Context, addr, primary string, replicas int) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer sc.Close()
	m, err := sc.Master(ctx, s.MasterName).Result()
	if err != nil {
		return err
	}
	if got := net.JoinHostPort(m["ip"], m["port"]); got != primary || m["flags"] != "master" ||
		m["num-other-sentinels"] != "2" || m["num-slaves"] != strconv.Itoa(replicas) {
		return fmt.Errorf("SENTINEL MASTER: %s flags=%s num-other-sentinels=%s num-slaves=%s",
			got, m["flags"], m["num-other-sentinels"], m["num-slaves"])
	}
	rs, err := sc.Replicas(ctx, s.MasterName).Result()
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r["flags"] != "slave" || r["master-link-status"] != "ok" {
			return fmt.Errorf("SENTINEL REPLICAS: %s:%s flags=%s master-link-status=%s",
				r["ip"], r["port"], r["flags"], r["master-link-status"])
		}
	}
	return nil
}

// URL returns the Sentinel URL our store.Open takes, in the form
// redis.ParseFailoverURL parses: the first Sentinel as the host, the others
// as addr parameters, and the monitored name as master_name.
func (s *Sentinel) URL() string {
	q := url.Values{"master_name": {s.MasterName}}
	u := "redis://" + s.SentinelAddrs[0] + "?" + q.Encode()
	for _, a := range s.SentinelAddrs[1:] {
		u += "&addr=" + a
	}
	return u
}

// Client returns a new failover client (one that follows the primary through
// failovers), closed when the test ends.
func (s *Sentinel) Client(tb testing.TB) *redis.Client {
	o, err := redis.ParseFailoverURL(s.URL())
	if err != nil {
		tb.Fatal(err)
	}
	c := redis.NewFailoverClient(o)
	tb.Cleanup(func() { c.Close() })
	return c
}

// PrimaryAddr returns the primary's address as the first Sentinel that
// answers tells it (SENTINEL GET-MASTER-ADDR-BY-NAME).
func (s *Sentinel) PrimaryAddr(ctx context.Context) (string, error) {
	var errs []error
	for _, addr := range s.SentinelAddrs {
		a, err := s.askPrimary(ctx, addr)
		if err == nil {
			return a, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

func (s *Sentinel) askPrimary(ctx context.Context, sentinel string) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel, MaxRetries: -1, DialTimeout: time.Second})
	defer sc.Close()
	hp, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
	if err != nil {
		return "", fmt.Errorf("sentinel %s: %w", sentinel, err)
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME: %q", sentinel, hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// Failover asks a Sentinel to fail over now (SENTINEL FAILOVER): it promotes
// a replica and turns the other nodes, the old primary included, into its
// replicas, without waiting for the primary to be down. Writes not yet
// copied to the promoted replica are lost, so a test that needs them should
// wait for them (WAIT) first. Follow up with WaitForNewPrimary.
func (s *Sentinel) Failover(ctx context.Context) error {
	var errs []error
	for _, addr := range s.SentinelAddrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
		err := sc.Failover(ctx, s.MasterName).Err()
		sc.Close()
		var rerr redis.Error
		if err == nil || errors.As(err, &rerr) {
			return err // done, or refused (INPROG, NOGOODSLAVE): do not ask another
		}
		errs = append(errs, fmt.Errorf("sentinel %s: %w", addr, err))
	}
	return errors.Join(errs...)
}

// WaitForNewPrimary waits until every Sentinel that answers (at least two)
// names the same primary other than old, and that node says it is a
// primary; it returns that node's address.
func (s *Sentinel) WaitForNewPrimary(ctx context.Context, old string) (string, error) {
	var primary string
	err := poll(ctx, "new primary", func(ctx context.Context) error {
		primary = ""
		answers := 0
		for _, addr := range s.SentinelAddrs {
			a, err := s.askPrimary(ctx, addr)
			if err != nil {
				continue
			}
			answers++
			if a == old {
				return fmt.Errorf("sentinel %s: primary still %s", addr, old)
			}
			if primary != "" && a != primary {
				return fmt.Errorf("sentinels disagree: %s and %s", primary, a)
			}
			primary = a
		}
		if answers < 2 {
			return fmt.Errorf("%d sentinels answer", answers)
		}
		c := nodeClient(primary)
		defer c.Close()
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if role := infoField(info, "role"); role != "master" {
			return fmt.Errorf("%s: role:%s", primary, role)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return primary, nil
}

// WaitReplica waits until the node at addr is a replica of the primary the
// Sentinels name, with its replication link up.
func (s *Sentinel) WaitReplica(ctx context.Context, addr string) error {
	return poll(ctx, addr+" replica of the primary", func(ctx context.Context) error {
		primary, err := s.PrimaryAddr(ctx)
		if err != nil {
			return err
		}
		return checkReplicaOf(ctx, addr, primary)
	})
}

func (s *Sentinel) waitReplicaOf(ctx context.Context, addr, primary string) error {
	return poll(ctx, addr+" replica of "+primary, func(ctx context.Context) error {
		return checkReplicaOf(ctx, addr, primary)
	})
}

func checkReplicaOf(ctx context.Context, addr, primary string) error {
	c := nodeClient(addr)
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	role := infoField(info, "role")
	of := net.JoinHostPort(infoField(info, "master_host"), infoField(info, "master_port"))
	link := infoField(info, "master_link_status")
	if role != "slave" || of != primary || link != "up" {
		return fmt.Errorf("%s: role:%s of %s master_link_status:%s", addr, role, of, link)
	}
	return nil
}

// Node returns the process of the data node at addr, or nil.
func (s *Sentinel) Node(addr string) *Server {
	for _, n := range s.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// KillPrimary kills the current primary with SIGKILL, waits until its port
// is closed and returns its address. The Sentinels fail over to a replica
// about a second later; wait for that with WaitForNewPrimary. It fails the
// test if no Sentinel names a primary.
func (s *Sentinel) KillPrimary() string {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, err := s.PrimaryAddr(ctx)
	if err != nil {
		s.tb.Fatal(err)
	}
	n := s.Node(addr)
	if n == nil {
		s.tb.Fatalf("sentinels name %s as primary: not a node of this setup", addr)
	}
	n.Stop()
	return addr
}

// RestartNode starts the data node at addr again on the same port, empty
// (no persistence), killing it first if it still runs. If the Sentinels
// name another node as primary it starts as a replica of that one and
// RestartNode waits for its replication link; so restart a killed primary
// only after WaitForNewPrimary, or it comes back as an empty primary.
func (s *Sentinel) RestartNode(addr string) {
	s.tb.Helper()
	n := s.Node(addr)
	if n == nil {
		s.tb.Fatalf("RestartNode: %s is not a data node of this setup", addr)
	}
	n.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	primary, err := s.PrimaryAddr(ctx)
	if err != nil {
		s.tb.Fatal(err)
	}
	if primary == addr {
		primary = ""
	}
	n.extra = nodeArgs(primary)
	n.Restart()
	if primary != "" {
		if err := s.waitReplicaOf(ctx, addr, primary); err != nil {
			s.tb.Fatalf("RestartNode: %v\n%s", err, n.log())
		}
	}
}

func (s *Sentinel) logs() string {
	var b strings.Builder
	for _, n := range append(s.Nodes[:len(s.Nodes):len(s.Nodes)], s.Sentinels...) {
		fmt.Fprintf(&b, "%s: %s\n", n.Addr, n.log())
	}
	return b.String()
}
