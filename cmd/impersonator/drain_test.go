package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDrainUnderLoad is a SIGTERM (run's context ending, as main's signal
// handler does) while clients keep sending: /readyz answers 503 at once,
// every request during the drain succeeds, then serve stops accepting,
// writes a last audit checkpoint and returns nil (exit 0).
func TestDrainUnderLoad(t *testing.T) {
	const drain = 2 * time.Second
	stderr := &syncBuffer{}
	addrs := make(chan string, 2)
	ctx, sigterm := context.WithCancel(withListening(context.Background(), func(name, addr string) {
		if name == "http" {
			addrs <- addr
		}
	}))
	defer sigterm()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, env(map[string]string{
			"IMPERSONATOR_LISTEN": "127.0.0.1:0", "IMPERSONATOR_KEYS_DIR": t.TempDir() + "/keys",
			"FOREST_AUTH_SECRET": forestSecret, "IMPERSONATOR_LOG_FORMAT": "text",
			"IMPERSONATOR_SHUTDOWN_DRAIN": drain.String(), "IMPERSONATOR_SHUTDOWN_TIMEOUT": "5s",
		}), io.Discard, stderr)
	}()
	var base string
	select {
	case addr := <-addrs:
		base = "http://" + addr
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not listen:\n%s", stderr.String())
	}
	cookie := login(t, base, mint(t, base, "42"))

	// A bounded load: 8 clients, each alternating /healthz and the
	// forward-auth session check (Redis, the session cache), until told to
	// stop or 2000 requests each.
	var ok, failed, afterSignal atomic.Int64
	var signalled atomic.Bool
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Go(func() {
			client := &http.Client{Timeout: 5 * time.Second}
			for i := range 2000 {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
				want := http.StatusOK
				if (i+c)%2 == 1 {
					req, _ = http.NewRequest(http.MethodGet, base+"/impersonation/session", nil)
					req.AddCookie(cookie)
				}
				res, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != want {
						err = &statusError{req.URL.Path, res.StatusCode}
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
				if signalled.Load() {
					afterSignal.Add(1)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // load running
	sigterm()
	signalled.Store(true)
	start := time.Now()
	// The signal reaches serve's goroutine asynchronously: /readyz must
	// turn 503 within a few milliseconds of it, not after the drain.
	readyz := 0
	for time.Since(start) < 250*time.Millisecond {
		res, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatalf("/readyz right after the signal: %v", err)
		}
		res.Body.Close()
		if readyz = res.StatusCode; readyz == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if readyz != http.StatusServiceUnavailable {
		t.Errorf("/readyz 250ms after the signal = %d, want 503", readyz)
	}
	t.Logf("/readyz answered 503 %s after the signal", time.Since(start).Round(time.Millisecond))
	// A mint and its login while draining: the state-changing routes are
	// still served, and their events come after any checkpoint the
	// periodic checkpointer wrote, so the last one must cover them (without
	// them, whether the final checkpoint had anything to write depended on
	// when the periodic one first ran).
	login(t, base, mint(t, base, "43"))
	// Load until shortly before the drain ends: every request must succeed.
	time.Sleep(drain - 500*time.Millisecond - time.Since(start))
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed while draining; first: %v", n, n+ok.Load(), firstErr.Load())
	}
	if afterSignal.Load() < 50 {
		t.Errorf("only %d requests succeeded after the signal: the service did not keep serving while draining", afterSignal.Load())
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after SIGTERM, want nil (exit 0)\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("serve did not stop:\n%s", stderr.String())
	}
	if took := time.Since(start); took < drain {
		t.Errorf("serve stopped %s after the signal, before the %s drain", took, drain)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		t.Error("the listener still accepts after serve returned")
	}
	log := stderr.String()
	i := strings.Index(log, "no longer accepting connections")
	if i < 0 || !strings.Contains(log[i:], "audit checkpoint") {
		t.Errorf("no final audit checkpoint after the listener closed:\n%s", log)
	}
	t.Logf("%d requests, %d after the signal, none failed", ok.Load(), afterSignal.Load())
}

type statusError struct {
	path string
	code int
}

func (e *statusError) Error() string { return e.path + ": status " + http.StatusText(e.code) }

// TestReadyzHungRedis: with a Redis that accepts connections and never
// answers, /readyz answers 503 within its own deadline (1 s), also to
// concurrent probes.
func TestReadyzHungRedis(t *testing.T) {
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { _, _ = io.Copy(io.Discard, c); c.Close() }) // reads, never answers
		}
	}()
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir}, env(nil), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	base, _ := startServe(t, map[string]string{"REDIS_URL": "redis://" + hung.Addr().String(), "IMPERSONATOR_KEYS_DIR": dir})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			start := time.Now()
			res, err := http.Get(base + "/readyz")
			took := time.Since(start)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			if res.StatusCode != http.StatusServiceUnavailable || took > 1500*time.Millisecond {
				t.Errorf("/readyz with a hung Redis = %d after %s, want 503 within about 1s", res.StatusCode, took)
			}
		})
	}
	wg.Wait()
}
