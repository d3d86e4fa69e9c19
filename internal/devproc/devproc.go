// Package devproc starts what the project's measuring tools run beside
// them (tools/loadtest, tools/auditbench): the service's binary, built
// from this module, and a throwaway redis-server on a loopback port. Every
// process it starts is in its own process group, so a Ctrl-C in the
// terminal reaches only the tool, which stops it, and is killed by the
// kernel should the tool die first.
package devproc

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ModuleRoot finds this module's folder from the working directory up.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/impersonator/impersonator\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run it from inside the impersonator module (or give --bin)")
		}
		dir = parent
	}
}

// BuildCLI builds ./cmd/impersonator into dir, with the build tags given,
// and returns the binary's path.
func BuildCLI(ctx context.Context, dir string, tags ...string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go not found to build the service (or give --bin): %w", err)
	}
	out := filepath.Join(dir, "impersonator")
	args := []string{"build", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, goBin, append(args, "./cmd/impersonator")...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/impersonator: %v\n%s", err, b)
	}
	return out, nil
}

// RedisServer finds redis-server: $REDIS_SERVER, then PATH, then Debian's
// path.
func RedisServer() (string, error) {
	if p := os.Getenv("REDIS_SERVER"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server", nil
	}
	return "", errors.New("redis-server not found: install it (`make test-deps`, or apt-get install -y redis-server) or set REDIS_SERVER")
}

// FreePort returns a loopback port free at the time of asking.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// Isolate puts cmd in its own process group and has the kernel kill it
// when the calling process dies.
func Isolate(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// StartRedis starts a redis-server persisting nothing on a free loopback
// port, its files in dir, and returns its address and how to stop it.
func StartRedis(ctx context.Context, dir string) (string, func(), error) {
	bin, err := RedisServer()
	if err != nil {
		return "", nil, err
	}
	var last error
	for range 3 { // a free port can be taken between the check and the start
		port, err := FreePort()
		if err != nil {
			return "", nil, err
		}
		cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"))
		Isolate(cmd)
		if err := cmd.Start(); err != nil {
			return "", nil, err
		}
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(exited)
		}()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		addr := net.JoinHostPort("127.0.0.1", port)
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		deadline := time.Now().Add(10 * time.Second)
	wait:
		for time.Now().Before(deadline) && ctx.Err() == nil {
			select {
			case <-exited:
				break wait
			default:
			}
			if err := c.Ping(ctx).Err(); err == nil {
				c.Close()
				return addr, stop, nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.Close()
		stop()
		b, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
		last = fmt.Errorf("redis-server on %s did not answer: %s", addr, lastLines(string(b), 5))
		if ctx.Err() != nil {
			return "", nil, ctx.Err()
		}
	}
	return "", nil, last
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Loopback refuses a URL that leaves this machine: the measuring tools
// are never to be pointed at anything else. A unix:// socket is local.
func Loopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme == "unix" {
		return nil
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: the measuring tools only target this machine", host)
}

// Environ is this process's environment without the variables the
// service and its CLI read (IMPERSONATOR_*, FOREST_*, REDIS_URL) and
// without those named in drop, so that nothing in the caller's shell
// changes what is measured.
func Environ(drop ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "IMPERSONATOR_") || strings.HasPrefix(name, "FOREST_") || name == "REDIS_URL" || slices.Contains(drop, name) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// Main is a measuring tool's main: it runs run with the command line and a
// context that Ctrl-C and SIGTERM cancel, and exits 1 with run's error
// (after an interrupt, "interrupted; " and stopped, which names what the
// tool had started and has stopped). -h is not an error.
func Main(name, stopped string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if errors.Is(err, context.Canceled) {
		err = errors.New("interrupted; " + stopped)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
