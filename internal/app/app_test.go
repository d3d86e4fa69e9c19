package app

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/token"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start builds and serves the App on :0 with the given variables over a
// fresh keys folder, until the test ends; it returns the base URL and the log.
func start(t *testing.T, vars map[string]string, opts Options) (string, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := token.LoadOrCreate(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	vars["IMPERSONATOR_KEYS_DIR"] = dir
	vars["IMPERSONATOR_SHUTDOWN_DRAIN"] = "0s"
	cfg, err := config.Load(nil, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	opts.Log = slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		a.Close()
	})
	return "http://" + ln.Addr().String(), logs
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestEvictingRedisNotReady: against real redis-servers configured with an
// evicting maxmemory-policy, /readyz answers 503 and says why, the log
// says so and the metric names the policy; noeviction is the control, and
// IMPERSONATOR_REDIS_ALLOW_EVICTION=true serves with a warning.
func TestEvictingRedisNotReady(t *testing.T) {
	for _, tc := range []struct {
		policy string
		allow  bool
		ready  bool
		log    string
	}{
		{"noeviction", false, true, ""},
		{"volatile-lru", false, false, "level=ERROR msg=\"redis maxmemory-policy is volatile-lru, not noeviction"},
		{"allkeys-lru", false, false, "level=ERROR msg=\"redis maxmemory-policy is allkeys-lru, not noeviction"},
		{"volatile-lru", true, true, "serving anyway because IMPERSONATOR_REDIS_ALLOW_EVICTION=true"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			srv := redistest.StartServer(t)
			if err := srv.Client(t).ConfigSet(context.Background(), "maxmemory-policy", tc.policy).Err(); err != nil {
				t.Fatal(err)
			}
			vars := map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_LISTEN": "127.0.0.1:0"}
			if tc.allow {
				vars["IMPERSONATOR_REDIS_ALLOW_EVICTION"] = "true"
			}
			base, logs := start(t, vars, Options{})
			code, body := get(t, base+"/readyz")
			if tc.ready && code != 200 {
				t.Errorf("/readyz = %d %s, want 200", code, body)
			}
			if !tc.ready && (code != 503 || !strings.Contains(body, "maxmemory-policy is "+tc.policy)) {
				t.Errorf("/readyz = %d %s, want 503 naming the policy", code, body)
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs.String())
			}
			if tc.log == "" && strings.Contains(logs.String(), "maxmemory-policy") {
				t.Errorf("noeviction logged about the policy:\n%s", logs.String())
			}
			_, metrics := get(t, base+"/metrics")
			want := `impersonator_redis_evicting{policy="` + tc.policy + `"} 1`
			if tc.policy == "noeviction" {
				want = `impersonator_redis_evicting{policy="noeviction"} 0`
			}
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		})
	}
}

// TestBuildInfoMetric: /metrics names the build that runs.
func TestBuildInfoMetric(t *testing.T) {
	base, _ := start(t, map[string]string{}, Options{Version: "v1.2.3", Commit: "abc123"})
	if _, metrics := get(t, base+"/metrics"); !strings.Contains(metrics, `impersonator_build_info{commit="abc123",version="v1.2.3"} 1`) {
		t.Errorf("/metrics lacks the build info:\n%s", metrics)
	}
}

// TestEvictionPolicyWatched: a policy changed while serving is noticed
// within the poll interval, both ways.
func TestEvictionPolicyWatched(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	base, _ := start(t, map[string]string{"REDIS_URL": srv.URL()}, Options{EvictionPoll: 100 * time.Millisecond})
	waitReady := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, body := get(t, base+"/readyz")
			if code == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz = %d %s, want %d", code, body, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitReady(200)
	if err := rdb.ConfigSet(context.Background(), "maxmemory-policy", "volatile-ttl").Err(); err != nil {
		t.Fatal(err)
	}
	waitReady(503)
	if err := rdb.ConfigSet(context.Background(), "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	waitReady(200)
}

// TestEvictionUnknown: a Redis that refuses both INFO and CONFIG (as some
// managed services do) does not hold readiness: the log says the policy
// could not be read.
func TestEvictionUnknown(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	// An ACL user that may do everything but INFO and CONFIG.
	if err := rdb.Do(ctx, "ACL", "SETUSER", "app", "on", ">app-password-0123456789", "~*", "&*", "+@all", "-info", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(srv.URL(), "redis://", "redis://app:app-password-0123456789@", 1)
	base, logs := start(t, map[string]string{"REDIS_URL": url}, Options{})
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s, want 200", code, body)
	}
	if !strings.Contains(logs.String(), "cannot read the Redis maxmemory-policy") {
		t.Errorf("log does not say the policy could not be read:\n%s", logs.String())
	}
}

// TestSentinelStartQuiet: a healthy Sentinel start logs no go-redis
// warning; the primary it found is an info line.
func TestSentinelStartQuiet(t *testing.T) {
	s := redistest.StartSentinel(t, 1)
	_, logs := start(t, map[string]string{"REDIS_URL": s.URL()}, Options{})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "sentinel: new master") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	log := logs.String()
	if strings.Contains(log, "level=WARN msg=\"redis client:") {
		t.Errorf("a healthy Sentinel start logs go-redis warnings:\n%s", log)
	}
	if !strings.Contains(log, "level=INFO msg=\"redis client: sentinel: new master=") {
		t.Errorf("the primary found is not logged at info:\n%s", log)
	}
}
