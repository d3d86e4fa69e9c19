// Package redistest starts the Redis servers tests run against: the embedded
// one (miniredis), a real redis-server on a free loopback port, a real
// three-master Redis Cluster (StartCluster) and a real primary with replicas
// watched by three Sentinels (StartSentinel). Every process listens on
// 127.0.0.1 only, keeps its files in a test temp dir and is killed when the
// test ends.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/devproc"
)

// Server is a real redis-server process owned by a test: a plain server, a
// Cluster node, a Sentinel-watched primary or replica, or a Sentinel.
type Server struct {
	Addr string
	cmd  *exec.Cmd
	port int
	dir  string
	tb   testing.TB

	// clusterNode makes this a Cluster node, with its cluster bus on busPort
	// (the default, port+10000, may not exist or be free).
	clusterNode bool
	busPort     int
	// sentinelConf, when set, makes this a Sentinel run from a config file
	// with these lines (the port, bind, dir and log lines are added).
	sentinelConf string
	// extra is appended to the command line of a data node.
	extra []string
	// ready, when set, runs once the process answers PING.
	ready func(context.Context, *Server) error
}

var quietOnce sync.Once

// quiet drops go-redis's own log lines ("failed to dial"): tests that stop
// Redis on purpose would otherwise flood the output.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// binary finds redis-server as the project's tools do ($REDIS_SERVER, then
// PATH, then the Debian path).
func binary() (string, error) { return devproc.RedisServer() }

// StartServer starts redis-server on a free loopback port, with no
// persistence, and stops it when the test ends. A missing redis-server fails
// the test: these tests are never skipped.
func StartServer(tb testing.TB) *Server {
	tb.Helper()
	quietOnce.Do(func() { redis.SetLogger(quiet{}) })
	s := &Server{dir: tb.TempDir(), tb: tb}
	s.launch()
	return s
}

// launch starts s on free ports, trying again a few times when a port was
// taken in the meantime, and kills it when the test ends.
func (s *Server) launch() {
	s.tb.Helper()
	bin, err := binary()
	if err != nil {
		s.tb.Fatal(err)
	}
	var lastErr error
	for range 5 {
		s.port = freePort(s.tb)
		if s.clusterNode {
			s.busPort = freePort(s.tb)
			if s.busPort == s.port {
				continue
			}
		}
		if lastErr = s.start(bin); lastErr == nil {
			s.tb.Cleanup(s.stop)
			return
		}
	}
	s.tb.Fatalf("redis-server did not start: %v", lastErr)
}

// args returns the redis-server command line (without the binary).
func (s *Server) args() ([]string, error) {
	port := strconv.Itoa(s.port)
	logfile := filepath.Join(s.dir, "redis.log")
	if s.sentinelConf != "" {
		// Sentinel needs a writable config file: it rewrites it.
		conf := filepath.Join(s.dir, "sentinel.conf")
		text := fmt.Sprintf("port %s\nbind 127.0.0.1\ndaemonize no\ndir %q\nlogfile %q\n%s",
			port, s.dir, logfile, s.sentinelConf)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return nil, err
		}
		return []string{conf, "--sentinel"}, nil
	}
	args := []string{
		"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--logfile", logfile,
	}
	if s.clusterNode {
		args = append(args,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(s.busPort))
	}
	return append(args, s.extra...), nil
}

func (s *Server) start(bin string) error {
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	args, err := s.args()
	if err != nil {
		return err
	}
	s.cmd = exec.Command(bin, args...)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited: %v: %s", err, s.log())
		default:
		}
		c := redis.NewClient(&redis.Options{Addr: s.Addr})
		err := c.Ping(context.Background()).Err()
		c.Close()
		if err == nil {
			go func() { <-exited }()
			if s.ready != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err = s.ready(ctx, s)
				cancel()
				if err != nil {
					s.stop()
					return fmt.Errorf("redis-server on %s: %w", s.Addr, err)
				}
			}
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = s.cmd.Process.Kill()
	return fmt.Errorf("redis-server on %s did not answer PING: %s", s.Addr, s.log())
}

func (s *Server) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

func (s *Server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		s.cmd = nil
	}
}

// Stop kills the server now (to test what happens when Redis goes away).
func (s *Server) Stop() {
	s.stop()
	// Wait until the port is closed so clients see the outage.
	for range 200 {
		c, err := net.DialTimeout("tcp", s.Addr, 50*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
}

// Pause freezes the server (SIGSTOP): connections stay open and commands
// are never answered, as with a hung Redis. Resume, or the test's end,
// thaws it.
func (s *Server) Pause() {
	s.tb.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		s.tb.Fatal("redistest: Pause of a stopped server")
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.tb.Fatal(err)
	}
	s.tb.Cleanup(s.Resume) // a frozen process is not killed cleanly otherwise
}

// Resume thaws a paused server (SIGCONT).
func (s *Server) Resume() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Restart starts the server again on the same port (empty: no persistence).
func (s *Server) Restart() {
	s.tb.Helper()
	bin, err := binary()
	if err != nil {
		s.tb.Fatal(err)
	}
	if err := s.start(bin); err != nil {
		s.tb.Fatal(err)
	}
}

// URL returns the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr }

// Client returns a new client of the server, closed when the test ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	tb.Cleanup(func() { c.Close() })
	return c
}

// Embedded starts a miniredis and returns it with a client of it.
func Embedded(tb testing.TB) (*miniredis.Miniredis, *redis.Client) {
	m := miniredis.RunT(tb)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	tb.Cleanup(func() { c.Close() })
	return m, c
}

var prefixes atomic.Int64

// Prefix returns a key prefix with a hash tag unique to this process and
// call, so that tests sharing one redis-server never see each other's keys.
func Prefix() string {
	return fmt.Sprintf("{t%d-%d}", os.Getpid(), prefixes.Add(1))
}

func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// poll calls check until it returns nil or ctx ends; then it returns the
// last error of check, naming what was awaited.
func poll(ctx context.Context, what string, check func(context.Context) error) error {
	var last error
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if last == nil || ctx.Err() == nil {
			last = err // not the error of the deadline cutting check short
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (%v)", what, last, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// infoField returns the value of field in the text of INFO or CLUSTER INFO.
func infoField(info, field string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// nodeClient returns a client of one node that gives up quickly, for the
// readiness checks here.
func nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
	})
}
