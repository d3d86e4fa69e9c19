// Package caddytest runs a real Caddy for tests: it finds the binary, wraps
// a block of site directives (the shipped configuration, as written) in a
// Caddyfile whose admin endpoint is off and whose every path lives in a
// temporary directory, starts caddy on a loopback port and stops it at
// cleanup. A missing caddy fails the test: scripts/test-deps installs it.
package caddytest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Binary returns the caddy to run: $CADDY, then caddy on PATH, then
// /usr/bin/caddy.
func Binary() (string, error) {
	if p := os.Getenv("CADDY"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("caddy"); err == nil {
		return p, nil
	}
	const usr = "/usr/bin/caddy"
	if _, err := os.Stat(usr); err == nil {
		return usr, nil
	}
	return "", errors.New("caddy not found ($CADDY, PATH, /usr/bin/caddy); run scripts/test-deps (Debian: apt-get install caddy)")
}

// Server is a running caddy.
type Server struct {
	Addr      string // host:port it listens on
	URL       string // http://Addr
	Dir       string // its configuration, logs and data
	AccessLog string // the site's access log (JSON lines)
	Log       string // caddy's own log
}

// Start writes a Caddyfile whose one site, http://addr, holds siteBody,
// starts caddy in the foreground with its admin endpoint off and waits
// until it accepts connections. caddy is stopped at cleanup. A missing
// binary or a configuration caddy refuses fails t.
func Start(t testing.TB, addr, siteBody string) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs caddy")
	}
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{Addr: addr, URL: "http://" + addr, Dir: dir,
		AccessLog: filepath.Join(dir, "access.log"), Log: filepath.Join(dir, "caddy.log")}
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte(s.config(siteBody)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Caddy keeps data and configuration under $HOME / $XDG_*: a
	// temporary folder, never the user's.
	env := append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	if out, err := command(bin, env, "validate", "--config", conf, "--adapter", "caddyfile").CombinedOutput(); err != nil {
		t.Fatalf("caddy refuses the configuration: %v\n%s\n%s", err, out, numbered(s.config(siteBody)))
	}
	cmd := command(bin, env, "run", "--config", conf, "--adapter", "caddyfile")
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		stderr.Close()
		t.Fatalf("start caddy: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		stderr.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case <-exited:
			t.Fatalf("caddy exited at start:\n%s", readFile(filepath.Join(dir, "stderr")))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy does not accept connections on %s:\n%s", addr, readFile(filepath.Join(dir, "stderr")))
		}
	}
}

func command(bin string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return cmd
}

func (s *Server) config(siteBody string) string {
	return fmt.Sprintf(`{
	admin off
	auto_https off
	storage file_system %s
	log {
		output file %s
		level INFO
	}
}

http://%s {
	log {
		output file %s
	}

%s
}
`, filepath.Join(s.Dir, "data"), s.Log, s.Addr, s.AccessLog, indent(siteBody, "\t"))
}

// LogText returns caddy's own log so far.
func (s *Server) LogText() string { return readFile(s.Log) }

func readFile(name string) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = by + l
		}
	}
	return strings.Join(lines, "\n")
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(s, "\n") {
		fmt.Fprintf(&b, "%3d %s\n", i+1, l)
	}
	return b.String()
}
