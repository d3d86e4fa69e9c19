package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/devproc"
)

// TestLoadtest runs the whole tool, briefly, against a freshly started
// redis-server and service: every scenario completes requests without an
// error, and the JSON has every field.
func TestLoadtest(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and loads the binary")
	}
	out := filepath.Join(t.TempDir(), "loadtest.json")
	profiles := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr strings.Builder
	if err := run(ctx, []string{"--duration", "300ms", "--concurrency", "4", "--json", out, "--profile", profiles}, &stdout, &stderr); err != nil {
		t.Fatalf("loadtest: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	t.Log("\n" + stdout.String())

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"target", "managed", "floor_redis", "duration", "concurrency", "gomaxprocs", "num_cpu", "go_version", "scenarios", "ratios"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("the JSON lacks %q", k)
		}
	}
	scenarios, _ := rep["scenarios"].([]any)
	seen := map[string]bool{}
	for _, s := range scenarios {
		s := s.(map[string]any)
		name, _ := s["name"].(string)
		seen[name] = true
		for _, k := range []string{"name", "kind", "requests", "errors", "seconds", "req_per_s", "p50_ms", "p99_ms", "allocs_per_request", "allocs_source", "first_error"} {
			if _, ok := s[k]; !ok {
				t.Errorf("%s: the JSON lacks %q", name, k)
			}
		}
		if n, _ := s["requests"].(float64); n < 1 {
			t.Errorf("%s: no request completed", name)
		}
		if n, _ := s["errors"].(float64); n != 0 {
			t.Errorf("%s: %v errors, the first: %v", name, n, s["first_error"])
		}
		for _, k := range []string{"req_per_s", "p50_ms", "p99_ms", "allocs_per_request"} {
			if v, _ := s[k].(float64); v <= 0 {
				t.Errorf("%s: %s is %v", name, k, s[k])
			}
		}
		// CPU per request: this process's always, Redis's (the service's
		// redis-server here) always, the service's in its own rows.
		// The mint floors' keys (one per request, the timed ones and the
		// allocation calibration's) are cleared after their phase, and
		// so are the durable floors' audit events (one per request).
		requests, _ := s["requests"].(float64)
		keys, _ := s["cleared_keys"].(float64)
		events, _ := s["cleared_events"].(float64)
		switch name {
		case "mint-floor":
			if keys < requests || events != 0 {
				t.Errorf("mint-floor: %v keys and %v events cleared after %v requests", keys, events, requests)
			}
		case "mint-floor-durable":
			if keys < requests+1 || events < requests {
				t.Errorf("mint-floor-durable: %v keys and %v events cleared after %v requests, want at least as many and the stream", keys, events, requests)
			}
		case "redeem-floor-durable":
			if events < requests {
				t.Errorf("redeem-floor-durable: %v events cleared after %v requests", events, requests)
			}
		}
		// Redis's time per script call: the service's mint and login run
		// scripts, the durable floors one script a request, the old
		// floors none.
		scripts := map[string]map[string]any{}
		list, _ := s["redis_scripts"].([]any)
		for _, c := range list {
			c := c.(map[string]any)
			scripts[c["command"].(string)] = c
		}
		switch name {
		case "mint", "redeem", "mint-floor-durable", "redeem-floor-durable":
			ev := scripts["evalsha"]
			perReq, _ := ev["calls_per_request"].(float64)
			usec, _ := ev["usec_per_call"].(float64)
			if perReq < 0.9 || usec <= 0 {
				t.Errorf("%s: evalsha %v calls per request, %v µs per call; want a script per request", name, ev["calls_per_request"], ev["usec_per_call"])
			}
			if strings.HasSuffix(name, "-durable") && perReq > 1.1 {
				t.Errorf("%s: %v scripts per request, want one", name, perReq)
			}
		case "mint-floor", "redeem-floor":
			if perReq, _ := scripts["evalsha"]["calls_per_request"].(float64); perReq > 0.1 {
				t.Errorf("%s: %v scripts per request, want none", name, perReq)
			}
		}
		cpu, _ := s["cpu_us_per_request"].(map[string]any)
		if v, _ := cpu["loadtest"].(float64); v <= 0 {
			t.Errorf("%s: cpu_us_per_request.loadtest is %v", name, cpu["loadtest"])
		}
		if _, ok := cpu["redis"].(float64); !ok {
			t.Errorf("%s: cpu_us_per_request.redis is %v", name, cpu["redis"])
		}
		if v, _ := cpu["service"].(float64); (s["kind"] == "service") != (v > 0) {
			t.Errorf("%s (%v): cpu_us_per_request.service is %v", name, s["kind"], cpu["service"])
		}
	}
	for _, want := range []string{"bare-http", "mint", "mint-floor", "mint-floor-durable", "redeem", "redeem-floor", "redeem-floor-durable",
		"session", "session-floor", "healthz"} {
		if !seen[want] {
			t.Errorf("no %s scenario", want)
		}
	}
	// --profile: the service's CPU profile of each service scenario's
	// timed phases (gzipped protobuf), and the binary they belong to.
	for _, name := range []string{"mint-1.pprof", "redeem-1.pprof", "session-1.pprof", "impersonator"} {
		b, err := os.ReadFile(filepath.Join(profiles, name))
		if err != nil || len(b) < 2 {
			t.Errorf("--profile: %s: %d bytes, %v", name, len(b), err)
			continue
		}
		if strings.HasSuffix(name, ".pprof") && (b[0] != 0x1f || b[1] != 0x8b) {
			t.Errorf("--profile: %s is not a gzipped profile", name)
		}
	}
	if floors, _ := filepath.Glob(filepath.Join(profiles, "*floor*")); len(floors) > 0 {
		t.Errorf("--profile recorded floors: %v", floors)
	}
	// The durable floors append the service's own events: its first
	// impersonation's, read from its audit stream.
	de, _ := rep["durable_events"].(map[string]any)
	for _, k := range []string{"minted_bytes", "redeemed_bytes"} {
		if n, _ := de[k].(float64); n < 200 || n > 2000 {
			t.Errorf("durable_events.%s = %v, want a real event's size", k, de[k])
		}
	}
	if src, _ := de["source"].(string); !strings.Contains(src, "service's audit stream") {
		t.Errorf("durable_events.source = %q", src)
	}
	for _, want := range []string{"mint-floor-durable", "redeem-floor-durable", "mint/mint-floor-durable", "redeem/redeem-floor-durable",
		"Redis time per script call", "evalsha"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the printed report has no %q", want)
		}
	}
	ratios, _ := rep["ratios"].([]any)
	if len(ratios) != 8 {
		t.Errorf("%d ratios, want 8", len(ratios))
	}
	for _, r := range ratios {
		r := r.(map[string]any)
		for _, k := range []string{"name", "scenario", "floor", "cost", "p50", "p99"} {
			if v, ok := r[k]; !ok || v == 0.0 {
				t.Errorf("ratio %v: %s is %v", r["name"], k, v)
			}
		}
	}
}

// TestHistogram checks the percentiles against known samples.
func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond / 10) // 0.1ms … 100ms
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d < -0.01 || d > 0.01 {
			t.Errorf("quantile(%v) = %v, want %v within 1%%", c.q, got, c.want)
		}
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--url", "http://10.0.0.1:8080", "--forest-secret", "s"},
		{"--url", "http://127.0.0.1:8080"},
		{"--duration", "1h"},
		{"--concurrency", "0"},
		{"--profile", "p", "--bin", "/bin/true"},
		{"--profile", "p", "--url", "http://127.0.0.1:8080", "--forest-secret", "s"},
	} {
		if _, err := parseFlags(args, &strings.Builder{}); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// TestRawClientAllocatesNothing proves that the floors' allocation figure
// is the server's alone: against a server that allocates nothing either,
// allocsPerRequest finds nothing.
func TestRawClientAllocatesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"ok\":true}\n")
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) == 2 { // the blank line that ends a request without a body
				if _, err := conn.Write(answer); err != nil {
					return
				}
			}
		}
	}()
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	raw := rawRequest(req)
	reqs := make([][]byte, calibrationWarm+500)
	for i := range reqs {
		reqs[i] = raw
	}
	got, err := allocsPerRequest(ln.Addr().String(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.3f allocations per request", got)
	if got > 0.05 {
		t.Errorf("%.2f allocations per request with a server that makes none", got)
	}
}

// TestFloorsClearTheirKeys: after the mint and redeem floors, their keys
// are gone (so that they do not weigh on the service's phases) and the
// service's keys are untouched.
func TestFloorsClearTheirKeys(t *testing.T) {
	ctx := context.Background()
	addr, stop, err := devproc.StartRedis(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	f := newFloors(rdb, 10, 10, durableEvents{Minted: []byte(`{"type":"impersonation.minted"}`), Redeemed: []byte(`{"type":"impersonation.redeemed"}`)})
	if _, err := f.seed(ctx, 2500); err != nil { // the redeem floor's keys
		t.Fatal(err)
	}
	for i := range 1500 { // the mint floor's
		rdb.Set(ctx, fmt.Sprintf("%sm:%d", f.prefix, i), "1", time.Minute)
	}
	// The durable floors' audit stream, through their scripts.
	for i := range 300 {
		key := fmt.Sprintf("%sm:d%d", f.prefix, i)
		if err := f.mintScript.Run(ctx, rdb, []string{key, f.streamKey()}, 60000, f.events.Minted).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		key := fmt.Sprintf("%sr:1-%d", f.prefix, i)
		if err := f.redeemScript.Run(ctx, rdb, []string{key, f.streamKey()}, f.events.Redeemed).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rdb.Set(ctx, f.prefix+"s", "1", time.Minute) // the session floor's one key, kept
	rdb.Set(ctx, "{impersonator}:token:x", "1", time.Minute)
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: "{impersonator}:audit", Values: []string{"e", "{}"}})
	// 2,500 seeded, 200 of them consumed; 1,500 + 300 minted; the stream.
	if c, err := f.clear(ctx); err != nil || c != (cleared{Keys: 2300 + 1800 + 1, Events: 500}) {
		t.Fatalf("clear: %+v, %v; want 4101 keys and 500 events", c, err)
	}
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	if want := []string{"{impersonator}:audit", "{impersonator}:token:x", f.prefix + "s"}; !slices.Equal(keys, want) {
		t.Errorf("after clear: %d keys %q…, want %q", len(keys), keys[:min(5, len(keys))], want)
	}
}
