// Package nginxtest runs a real nginx for tests: it finds the binary, takes a
// configuration block from Markdown documentation (so that the docs and the
// test cannot drift), wraps it in a minimal nginx.conf whose every path lives
// in a temporary directory, starts nginx on a loopback port and stops it at
// cleanup. A missing nginx fails the test: scripts/test-deps installs it.
package nginxtest

import (
	"bytes"
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

// Binary returns the nginx to run: $NGINX, then nginx on PATH, then
// /usr/sbin/nginx (root's PATH has /usr/sbin, other users' often not).
func Binary() (string, error) {
	if p := os.Getenv("NGINX"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	const sbin = "/usr/sbin/nginx"
	if _, err := os.Stat(sbin); err == nil {
		return sbin, nil
	}
	return "", errors.New("nginx not found ($NGINX, PATH, /usr/sbin/nginx); run scripts/test-deps (Debian: apt-get install nginx)")
}

// Snippet returns the body of the first fenced code block between the
// Markdown comments <!-- name --> and <!-- /name -->, with the indentation
// of its opening fence removed from every line (a block inside a list item
// is indented).
func Snippet(markdown []byte, name string) (string, error) {
	open, closing := []byte("<!-- "+name+" -->"), []byte("<!-- /"+name+" -->")
	i := bytes.Index(markdown, open)
	if i < 0 {
		return "", fmt.Errorf("marker %s not found", open)
	}
	rest := markdown[i+len(open):]
	j := bytes.Index(rest, closing)
	if j < 0 {
		return "", fmt.Errorf("marker %s not found after %s", closing, open)
	}
	lines := strings.Split(string(rest[:j]), "\n")
	var body []string
	indent, in := "", false
	for _, l := range lines {
		trimmed := strings.TrimLeft(l, " \t")
		switch {
		case !in && strings.HasPrefix(trimmed, "```"):
			in, indent = true, l[:len(l)-len(trimmed)]
		case in && strings.HasPrefix(trimmed, "```"):
			return strings.Join(body, "\n") + "\n", nil
		case in:
			body = append(body, strings.TrimPrefix(l, indent))
		}
	}
	return "", fmt.Errorf("no complete fenced code block between %s and %s", open, closing)
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, for programs that must be told their port before they listen.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Server is a running nginx.
type Server struct {
	Addr      string // host:port it listens on
	URL       string // http://Addr
	Dir       string // its prefix: configuration, logs, temporary files
	AccessLog string // the access log (format "combined")
	ErrorLog  string
}

// Start writes an nginx.conf whose single server block listens on addr and
// holds serverBody, starts nginx in the foreground (one process, no
// daemon) and waits until it accepts connections. nginx is stopped at
// cleanup. A missing binary or a configuration nginx refuses fails t.
func Start(t testing.TB, addr, serverBody string) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs nginx")
	}
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{Addr: addr, URL: "http://" + addr, Dir: dir,
		AccessLog: filepath.Join(dir, "access.log"), ErrorLog: filepath.Join(dir, "error.log")}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(s.config(serverBody)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-q", "-p", dir, "-c", conf, "-e", s.ErrorLog).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx refuses the configuration: %v\n%s\n%s", err, out, numbered(s.config(serverBody)))
	}

	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", s.ErrorLog)
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		stderr.Close()
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		stderr.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		// SIGQUIT: graceful shutdown; a kill if it lingers.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case <-exited:
			t.Fatalf("nginx exited at start: %s\n%s", s.tail(), readFile(filepath.Join(dir, "stderr")))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not accept connections on %s: %s", addr, s.tail())
		}
	}
}

func (s *Server) config(serverBody string) string {
	p := func(name string) string { return filepath.Join(s.Dir, name) }
	return fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %s;
error_log %s info;

events {
    worker_connections 64;
}

http {
    access_log %s combined;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;

    server {
        listen %s;
        server_name localhost;

%s
    }
}
`, p("nginx.pid"), s.ErrorLog, s.AccessLog, p("client_body"), p("proxy"), p("fastcgi"), p("uwsgi"), p("scgi"),
		s.Addr, indent(serverBody, "        "))
}

// ErrorLogText returns nginx's error log so far.
func (s *Server) ErrorLogText() string { return readFile(s.ErrorLog) }

func (s *Server) tail() string {
	l := readFile(s.ErrorLog)
	if len(l) > 4000 {
		l = l[len(l)-4000:]
	}
	return l
}

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
