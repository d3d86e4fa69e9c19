// Command auditbench measures the audit log at production size. It loads N
// events (default 1,000,000) through the production write path
// (audit.Encoder, then store.Append: the Lua script that appends each event
// and its index entries), from many goroutines at once, with a realistic
// shape: ~20,000 subjects (users, a few of them hot, and some companies),
// ~200 admins (a few doing most of the work, a few approvals naming a
// requester) and a mix of event types. While it loads, it writes signed
// checkpoints the way the service does (audit.Log.CatchUp). Then it times:
//
//   - audit.Log.Query by subject, by actor id, by actor email, and over a
//     one-minute since/until window in the middle of the log (limit 100,
//     median and max of --runs runs; the target is under 10 ms each);
//   - the old way of answering the subject query, for comparison: a scan
//     of the stream from the newest entry in batches of 500, filtered in Go,
//     within the old budget of 20,000 entries;
//   - audit.Log.Verify with the public keys alone (token.ParseJWKS of the
//     keyset's JWKS) over the whole log, in a child process so that its peak
//     RSS is its own; and, with the default key prefix, `impersonator audit
//     verify --jwks FILE` (built from ./cmd/impersonator) too, under
//     /usr/bin/time -v when it exists. Peak RSS must stay flat: tens of MB
//     whatever the log's size.
//
// It prints a table, and writes the figures as JSON with --json. By default
// it starts a redis-server on a free loopback port and stops it when it
// exits; --redis-url targets another loopback Redis, which must not already
// hold an audit log under the prefix. Run it with `make bench-audit`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/devproc"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// childEnv, when set to "verify" in the environment, makes this program the
// verifying child (see verifyChild) instead of the benchmark.
const childEnv = "AUDITBENCH_CHILD"

// target is what a query must stay under.
const target = 10 * time.Millisecond

// The old query's scan: batches of 500 within a budget of 20,000 entries.
const (
	oldBatch  = 500
	oldBudget = 20000
)

func main() {
	if os.Getenv(childEnv) == "verify" {
		os.Exit(verifyChild(os.Args[1:], os.Stdout, os.Stderr))
	}
	devproc.Main("auditbench", "the redis-server it started is stopped", run)
}

type options struct {
	events     int
	workers    int
	subjects   int
	admins     int
	runs       int
	redisURL   string
	prefix     string
	jsonPath   string
	bin        string
	cli        bool
	cpDuring   bool
	cpuProfile string
	timeout    time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("auditbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.events, "events", 1_000_000, "events to load (1 to 20,000,000)")
	fs.IntVar(&o.workers, "workers", 64, "goroutines appending at once, each with its own connection (1 to 1024)")
	fs.IntVar(&o.subjects, "subjects", 20000, "distinct users (companies: a tenth as many more)")
	fs.IntVar(&o.admins, "admins", 200, "distinct admins")
	fs.IntVar(&o.runs, "runs", 20, "timed runs of each query (after one warm-up run)")
	fs.StringVar(&o.redisURL, "redis-url", "", "load into this loopback Redis instead of a redis-server started here (it must hold no audit log under --prefix)")
	fs.StringVar(&o.prefix, "prefix", store.DefaultPrefix, "key prefix ({hash tag}); the CLI verify runs only with the default, the CLI's own")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results to this file as JSON")
	fs.StringVar(&o.bin, "bin", "", "impersonator binary for the CLI verify (default: go build ./cmd/impersonator into a temporary folder)")
	fs.BoolVar(&o.cpDuring, "checkpoint-during-load", true, "write checkpoints every second while loading, as the service would; false: all at the end, every checkpoint full (1000 events), verification's worst case for memory")
	fs.BoolVar(&o.cli, "cli", true, "also verify through `impersonator audit verify --jwks FILE`")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the query phase to this file")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "a hard bound on the whole run")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: auditbench [flags]\n\nLoads an audit log through the production path and times its queries and its verification.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.events < 1 || o.events > 20_000_000:
		return nil, errors.New("--events must be from 1 to 20,000,000")
	case o.workers < 1 || o.workers > 1024:
		return nil, errors.New("--workers must be from 1 to 1024")
	case o.subjects < 50 || o.admins < 10:
		return nil, errors.New("--subjects must be at least 50 and --admins at least 10")
	case o.runs < 1:
		return nil, errors.New("--runs must be at least 1")
	}
	if o.redisURL != "" {
		if err := loopbackOnly(o.redisURL); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// loopbackOnly refuses a Redis that is not on this machine.
func loopbackOnly(raw string) error {
	if u, err := url.Parse(raw); err == nil && u.Scheme != "redis" && u.Scheme != "unix" {
		return fmt.Errorf("--redis-url: only redis:// and unix:// URLs, not %q", u.Scheme)
	}
	if err := devproc.Loopback(raw); err != nil {
		return fmt.Errorf("--redis-url: %w", err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// The report.

type report struct {
	Events       int     `json:"events"`
	Workers      int     `json:"workers"`
	Subjects     int     `json:"subjects"`
	Admins       int     `json:"admins"`
	Prefix       string  `json:"prefix"`
	Managed      bool    `json:"managed_redis"`
	GoVersion    string  `json:"go_version"`
	NumCPU       int     `json:"num_cpu"`
	LoadSeconds  float64 `json:"load_seconds"`
	LoadRate     float64 `json:"load_events_per_s"`
	LoadErrors   int64   `json:"load_errors"`
	Checkpoints  int     `json:"checkpoints"`
	CpDuring     bool    `json:"checkpoints_during_load"`
	CatchUpSecs  float64 `json:"final_catch_up_seconds"`
	RedisMemMB   float64 `json:"redis_used_memory_mb"`
	StreamMB     float64 `json:"audit_stream_mb"`
	CheckptMB    float64 `json:"checkpoint_stream_mb"`
	RestMB       float64 `json:"indexes_and_rest_mb"`
	WindowSince  string  `json:"window_since"`
	WindowUntil  string  `json:"window_until"`
	Queries      []query `json:"queries"`
	Scan         query   `json:"old_scan"`
	Verify       verify  `json:"verify"`
	VerifyCLI    *verify `json:"verify_cli,omitempty"`
	VerifyCLINot string  `json:"verify_cli_skipped,omitempty"`
	TargetMS     float64 `json:"target_ms"`
	// The machine's load average (1 min) before the load and after the
	// queries: other work on it shows in the maxima.
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
}

type query struct {
	Name     string  `json:"name"`
	Filter   string  `json:"filter"`
	Returned int     `json:"returned"`
	More     bool    `json:"more"` // a next cursor came back
	Scanned  int     `json:"scanned,omitempty"`
	Runs     int     `json:"runs"`
	MedianMS float64 `json:"median_ms"`
	MaxMS    float64 `json:"max_ms"`
	UnderTgt bool    `json:"under_target"`
}

type verify struct {
	How         string  `json:"how"`
	OK          bool    `json:"ok"`
	Problem     string  `json:"problem,omitempty"`
	Checkpoints int     `json:"checkpoints"`
	Verified    int     `json:"events_verified"`
	Uncovered   int     `json:"events_not_yet_checkpointed"`
	WallSeconds float64 `json:"wall_seconds"`
	// Peak RSS: the kernel's for the child process (wait4's rusage), the
	// child's own VmHWM when it reports it, and /usr/bin/time -v's.
	PeakRSSMB     float64  `json:"peak_rss_mb"`
	VmHWMStartMB  *float64 `json:"vmhwm_start_mb,omitempty"`
	VmHWMEndMB    *float64 `json:"vmhwm_end_mb,omitempty"`
	TimeVPeakMB   *float64 `json:"time_v_peak_rss_mb,omitempty"`
	EventsPerSec  float64  `json:"events_per_s"`
	VerifyCommand string   `json:"command"`
}

func (r *report) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "audit log\t%d events, %d users (+%d companies), %d admins, prefix %s, Go %s, %d CPUs\n",
		r.Events, r.Subjects, r.Subjects/10, r.Admins, r.Prefix, r.GoVersion, r.NumCPU)
	fmt.Fprintf(tw, "machine load\t%s before loading, %s after the queries (1-minute load average)\n", r.LoadAvgStart, r.LoadAvgEnd)
	fmt.Fprintf(tw, "load\t%.1f s, %.0f events/s with %d workers (store.Append), %d errors\n", r.LoadSeconds, r.LoadRate, r.Workers, r.LoadErrors)
	when := "every second while loading"
	if !r.CpDuring {
		when = "all after loading"
	}
	fmt.Fprintf(tw, "checkpoints\t%d signed (1000 events each at most), %s; final catch-up %.1f s\n", r.Checkpoints, when, r.CatchUpSecs)
	fmt.Fprintf(tw, "redis memory\t%.0f MB: audit stream %.0f MB, checkpoints %.0f MB, indexes (and the empty server) %.0f MB\n",
		r.RedisMemMB, r.StreamMB, r.CheckptMB, r.RestMB)
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "query (limit 100)\tfilter\treturned\tmore\tmedian ms\tmax ms\t< %.0f ms\n", ms(target))
	for _, q := range append(slices.Clone(r.Queries), r.Scan) {
		more := "no"
		if q.More {
			more = "yes"
		}
		under := "yes"
		if !q.UnderTgt {
			under = "NO"
		}
		ret := strconv.Itoa(q.Returned)
		if q.Scanned > 0 {
			ret += fmt.Sprintf(" (of %d read)", q.Scanned)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%.2f\t%s\n", q.Name, q.Filter, ret, more, q.MedianMS, q.MaxMS, under)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "verify (public keys only)\tok\tcheckpoints\tevents\twall s\tevents/s\tpeak RSS MB\tVmHWM start→end MB\ttime -v MB")
	for _, v := range []*verify{&r.Verify, r.VerifyCLI} {
		if v == nil {
			continue
		}
		hwm, tv := "-", "-"
		if v.VmHWMStartMB != nil && v.VmHWMEndMB != nil {
			hwm = fmt.Sprintf("%.1f→%.1f", *v.VmHWMStartMB, *v.VmHWMEndMB)
		}
		if v.TimeVPeakMB != nil {
			tv = fmt.Sprintf("%.1f", *v.TimeVPeakMB)
		}
		ok := "yes"
		if !v.OK {
			ok = "NO: " + v.Problem
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%.0f\t%.1f\t%s\t%s\n", v.How, ok, v.Checkpoints, v.Verified, v.WallSeconds, v.EventsPerSec, v.PeakRSSMB, hwm, tv)
	}
	if r.VerifyCLINot != "" {
		fmt.Fprintf(tw, "cli\tskipped: %s\n", r.VerifyCLINot)
	}
	return tw.Flush()
}

// loadAvg is the machine's 1-minute load average ("?" when unknown).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ---------------------------------------------------------------------------
// The run.

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	tmp, err := os.MkdirTemp("", "auditbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	rep := &report{CpDuring: o.cpDuring, Events: o.events, Workers: o.workers, Subjects: o.subjects, Admins: o.admins, Prefix: o.prefix,
		GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(), TargetMS: ms(target)}
	redisURL := o.redisURL
	if redisURL == "" {
		addr, stopRedis, err := startRedis(ctx, tmp)
		if err != nil {
			return err
		}
		defer stopRedis()
		redisURL, rep.Managed = "redis://"+addr, true
	}
	loadURL, err := withPool(redisURL, o.workers+4)
	if err != nil {
		return err
	}
	st, err := store.Open(loadURL, store.Options{Prefix: o.prefix})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Ping(ctx); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	log := audit.NewLog(st, time.Now)
	if last, err := log.LastID(ctx); err != nil {
		return err
	} else if last != "0-0" {
		return fmt.Errorf("the Redis at --redis-url already holds an audit log under %s: use a fresh one, or another --prefix", o.prefix)
	}
	// The checkpoints' signing key, written and loaded as the service does.
	keysDir := filepath.Join(tmp, "keys")
	if err := os.Mkdir(keysDir, 0o700); err != nil {
		return err
	}
	if _, err := token.WriteNew(keysDir, token.AlgEdDSA, time.Now()); err != nil {
		return err
	}
	keyset, err := token.LoadDir(keysDir)
	if err != nil {
		return err
	}
	jwksPath := filepath.Join(tmp, "jwks.json")
	if err := os.WriteFile(jwksPath, keyset.JWKS(), 0o644); err != nil {
		return err
	}

	rep.LoadAvgStart = loadAvg()
	if err := load(ctx, o, st, log, keyset, rep, stderr); err != nil {
		return err
	}
	rep.RedisMemMB, rep.StreamMB, rep.CheckptMB = redisMemory(ctx, redisURL, o.prefix)
	rep.RestMB = rep.RedisMemMB - rep.StreamMB - rep.CheckptMB

	fmt.Fprintln(stderr, "auditbench: timing the queries")
	if err := queries(ctx, o, st, log, rep); err != nil {
		return err
	}

	rep.LoadAvgEnd = loadAvg()
	fmt.Fprintln(stderr, "auditbench: verifying with the public keys only (child process)")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	v, err := runVerify(ctx, "in-process (child)", self, []string{"--redis-url", redisURL, "--prefix", o.prefix, "--jwks", jwksPath},
		append(os.Environ(), childEnv+"=verify"), false)
	if err != nil {
		return err
	}
	rep.Verify = *v
	switch {
	case !o.cli:
		rep.VerifyCLINot = "--cli=false"
	case o.prefix != store.DefaultPrefix:
		rep.VerifyCLINot = "the CLI reads the default prefix " + store.DefaultPrefix + " only"
	default:
		fmt.Fprintln(stderr, "auditbench: verifying with `impersonator audit verify --jwks`")
		bin := o.bin
		if bin == "" {
			if bin, err = devproc.BuildCLI(ctx, tmp); err != nil {
				return err
			}
		}
		v, err := runVerify(ctx, "impersonator audit verify --jwks", bin, []string{"audit", "verify", "--jwks", jwksPath},
			append(devproc.Environ(childEnv), "REDIS_URL="+redisURL), true)
		if err != nil {
			return err
		}
		rep.VerifyCLI = v
	}

	if err := rep.print(stdout); err != nil {
		return err
	}
	if o.jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if !rep.Verify.OK || (rep.VerifyCLI != nil && !rep.VerifyCLI.OK) {
		return errors.New("verification did not pass on an untouched log")
	}
	return nil
}

// withPool sets the client's pool size on a redis:// URL (unless it sets
// one), so every loading goroutine has its own connection.
func withPool(raw string, n int) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := u.Query()
	if !q.Has("pool_size") {
		q.Set("pool_size", strconv.Itoa(n))
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// redisMemory returns the server's used memory, and the audit stream's and
// the checkpoint stream's (MEMORY USAGE, every node counted; the key names
// are internal/store's), in MB; zeros when it cannot tell.
func redisMemory(ctx context.Context, redisURL, prefix string) (used, stream, checkpoints float64) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return 0, 0, 0
	}
	c := redis.NewClient(opt)
	defer c.Close()
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, 0, 0
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseFloat(v, 64)
			used = n / (1 << 20)
		}
	}
	n, _ := c.MemoryUsage(ctx, prefix+":audit", 0).Result()
	m, _ := c.MemoryUsage(ctx, prefix+":audit:checkpoints", 0).Result()
	return used, float64(n) / (1 << 20), float64(m) / (1 << 20)
}

// ---------------------------------------------------------------------------
// The shape of the log.

// shape makes the events: who does what to whom.
type shape struct{ subjects, admins int }

var (
	teams  = []string{"Support", "Billing", "Trust & Safety", "Engineering"}
	agents = []string{
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
	}
	// typeWeights: of 100 events, how many of each type.
	typeWeights = []struct {
		t audit.Type
		w int
	}{{audit.Minted, 35}, {audit.Redeemed, 30}, {audit.Ended, 20}, {audit.Denied, 6}, {audit.Rejected, 6}, {audit.Revoked, 3}}
)

// admin n (1-based): id "1000+n", email "adminN@example.com".
func (s shape) admin(n int) audit.Actor {
	return audit.Actor{ID: strconv.Itoa(1000 + n), Email: fmt.Sprintf("admin%d@example.com", n), Team: teams[n%len(teams)], Role: "Support agent"}
}

// pickAdmin: 30% of the work by the 5 busiest admins, the rest spread.
func (s shape) pickAdmin(r *rand.Rand) int {
	if r.IntN(100) < 30 {
		return 1 + r.IntN(5)
	}
	return 1 + r.IntN(s.admins)
}

// subject: 5% on 5 hot users, 10% on companies, the rest spread over users.
func (s shape) subject(r *rand.Rand) audit.Subject {
	switch p := r.IntN(100); {
	case p < 5:
		return audit.Subject{Collection: "users", ID: strconv.Itoa(1 + r.IntN(5))}
	case p < 15:
		return audit.Subject{Collection: "companies", ID: strconv.Itoa(1 + r.IntN(max(1, s.subjects/10)))}
	}
	return audit.Subject{Collection: "users", ID: strconv.Itoa(1 + r.IntN(s.subjects))}
}

func (s shape) event(r *rand.Rand) audit.Event {
	p, typ := r.IntN(100), audit.Minted
	for _, tw := range typeWeights {
		if p < tw.w {
			typ = tw.t
			break
		}
		p -= tw.w
	}
	e := audit.Event{
		Type:      typ,
		Actor:     s.admin(s.pickAdmin(r)),
		Subject:   s.subject(r),
		IP:        fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), 1+r.IntN(254)),
		UserAgent: agents[r.IntN(len(agents))],
		RequestID: fmt.Sprintf("%016x", r.Uint64()),
	}
	switch typ {
	case audit.Minted:
		e.Reason = fmt.Sprintf("ticket %d: customer cannot see their invoices", 10000+r.IntN(90000))
		e.TokenID = fmt.Sprintf("%032x", r.Uint64())
		if r.IntN(20) == 0 { // a Forest approval: another admin asked
			req := s.admin(1 + r.IntN(s.admins))
			e.Requester = &req
		}
	case audit.Redeemed, audit.Ended, audit.Revoked:
		e.TokenID = fmt.Sprintf("%032x", r.Uint64())
		e.SessionID = fmt.Sprintf("%032x", r.Uint64())
	case audit.Denied:
		e.Reason = "ticket"
		e.Detail = "reason too short (min_reason_length 8)"
	case audit.Rejected:
		e.Detail = "token already redeemed (replay)"
	}
	return e
}

// ---------------------------------------------------------------------------
// Loading.

func load(ctx context.Context, o *options, st *store.Store, log *audit.Log, keyset *token.Keyset, rep *report, stderr io.Writer) error {
	sh := shape{subjects: o.subjects, admins: o.admins}
	var next, done, errs atomic.Int64
	var firstErr atomic.Value
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The checkpointer, as the service runs it, only more often: it never
	// blocks an append.
	var cpErr error
	cpDone := make(chan struct{})
	var checkpoints atomic.Int64
	go func() {
		defer close(cpDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for o.cpDuring {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			sums, err := log.CatchUp(lctx, keyset, 0)
			checkpoints.Add(int64(len(sums)))
			if err != nil && lctx.Err() == nil {
				cpErr = err
				return
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	for w := range o.workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w)+1, uint64(start.UnixNano())))
			for lctx.Err() == nil {
				if next.Add(1) > int64(o.events) {
					return
				}
				enc, err := audit.Encoder{}.Encode(sh.event(r))
				if err == nil {
					_, err = st.Append(lctx, enc)
				}
				if err != nil {
					if errs.Add(1) == 1 {
						firstErr.Store(err)
					}
					if errs.Load() > 100 {
						cancel()
					}
					continue
				}
				done.Add(1)
			}
		})
	}
	progress := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-progress:
				return
			case <-t.C:
				n := done.Load()
				fmt.Fprintf(stderr, "auditbench: loaded %d of %d (%.0f/s), %d checkpoints\n", n, o.events, float64(n)/time.Since(start).Seconds(), checkpoints.Load())
			}
		}
	}()
	wg.Wait()
	close(progress)
	elapsed := time.Since(start)
	cancel()
	<-cpDone
	if err := ctx.Err(); err != nil {
		return err
	}
	if n := errs.Load(); n > 0 {
		return fmt.Errorf("%d appends failed, the first: %v", n, firstErr.Load())
	}
	if cpErr != nil {
		return fmt.Errorf("checkpoint: %w", cpErr)
	}
	rep.LoadSeconds = elapsed.Seconds()
	rep.LoadRate = float64(done.Load()) / elapsed.Seconds()

	t := time.Now()
	sums, err := log.CatchUp(ctx, keyset, 0)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	rep.CatchUpSecs = time.Since(t).Seconds()
	rep.Checkpoints = int(checkpoints.Load()) + len(sums)
	fmt.Fprintf(stderr, "auditbench: loaded %d events in %.1f s (%.0f/s), %d checkpoints\n", done.Load(), rep.LoadSeconds, rep.LoadRate, rep.Checkpoints)
	return nil
}

// ---------------------------------------------------------------------------
// Queries.

func queries(ctx context.Context, o *options, st *store.Store, log *audit.Log, rep *report) error {
	sh := shape{subjects: o.subjects, admins: o.admins}
	first, err := st.Events(ctx, "-", "+", 1)
	if err != nil {
		return err
	}
	last, err := st.EventsBefore(ctx, "+", "-", 1)
	if err != nil {
		return err
	}
	if len(first) == 0 || len(last) == 0 {
		return errors.New("the log is empty")
	}
	// Stream ids are the server's clock: the window is the minute around
	// the middle of the time the load took.
	lo, hi := streamMS(first[0].ID), streamMS(last[0].ID)
	mid := time.UnixMilli((lo + hi) / 2)
	since, until := mid.Add(-30*time.Second), mid.Add(30*time.Second)
	rep.WindowSince, rep.WindowUntil = since.UTC().Format(time.RFC3339Nano), until.UTC().Format(time.RFC3339Nano)

	subject := "users:42"
	cases := []struct {
		name, desc string
		f          audit.Filter
	}{
		{"subject", "subject=" + subject, audit.Filter{Subject: subject}},
		{"actor id", "actor=" + sh.admin(o.admins/2).ID, audit.Filter{Actor: sh.admin(o.admins / 2).ID}},
		{"actor email", "actor=" + sh.admin(7).Email, audit.Filter{Actor: sh.admin(7).Email}},
		{"1-minute window", "since/until, mid-log", audit.Filter{Since: since, Until: until}},
	}
	// The profile covers the indexed queries, not the old scan.
	stopProfile := func() {}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		var once sync.Once
		stopProfile = func() { once.Do(pprof.StopCPUProfile) }
		defer stopProfile()
	}
	for _, c := range cases {
		q := query{Name: c.name, Filter: c.desc, Runs: o.runs}
		var times []time.Duration
		for i := range o.runs + 1 {
			t := time.Now()
			p, err := log.Query(ctx, c.f, 100, "")
			d := time.Since(t)
			if err != nil {
				return fmt.Errorf("query %s: %w", c.desc, err)
			}
			if i == 0 { // warm-up
				q.Returned, q.More = len(p.Events), p.NextCursor != nil
				continue
			}
			times = append(times, d)
		}
		q.MedianMS, q.MaxMS = stats(times)
		q.UnderTgt = q.MaxMS < ms(target)
		rep.Queries = append(rep.Queries, q)
	}

	stopProfile()

	// The old way: the newest entries in batches of 500, filtered in Go,
	// within a budget of 20,000 entries.
	f := audit.Filter{Subject: subject}
	q := query{Name: "subject, old scan", Filter: "subject=" + subject + ", XREVRANGE ≤20,000", Runs: o.runs}
	var times []time.Duration
	for i := range o.runs + 1 {
		t := time.Now()
		found, scanned, more, err := oldScan(ctx, st, f, 100)
		d := time.Since(t)
		if err != nil {
			return err
		}
		if i == 0 {
			q.Returned, q.Scanned, q.More = found, scanned, more
			continue
		}
		times = append(times, d)
	}
	q.MedianMS, q.MaxMS = stats(times)
	q.UnderTgt = q.MaxMS < ms(target)
	rep.Scan = q
	return nil
}

// oldScan answers f the way Query did before the indexes: reading the
// stream from the newest entry, 500 at a time, decoding and filtering each,
// until limit matches or the budget is spent (more: a cursor would follow).
func oldScan(ctx context.Context, st *store.Store, f audit.Filter, limit int) (found, scanned int, more bool, err error) {
	end := "+"
	for scanned < oldBudget {
		recs, err := st.EventsBefore(ctx, end, "-", oldBatch)
		if err != nil {
			return 0, 0, false, err
		}
		for _, r := range recs {
			scanned++
			var e audit.Event
			if json.Unmarshal([]byte(r.Raw), &e) == nil && f.Match(e) {
				if found++; found == limit {
					return found, scanned, true, nil
				}
			}
		}
		if len(recs) < oldBatch {
			return found, scanned, false, nil
		}
		end = "(" + recs[len(recs)-1].ID
	}
	return found, scanned, true, nil
}

func streamMS(id string) int64 {
	m, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(m, 10, 64)
	return n
}

// stats returns the median and the max, in ms.
func stats(ds []time.Duration) (float64, float64) {
	slices.Sort(ds)
	n := len(ds)
	med := ds[n/2]
	if n%2 == 0 {
		med = (ds[n/2-1] + ds[n/2]) / 2
	}
	return ms(med), ms(ds[n-1])
}

// ---------------------------------------------------------------------------
// Verification, in a child process: its peak RSS is verification's alone.

// childReport is what the verifying child prints.
type childReport struct {
	Report       audit.Report `json:"report"`
	WallSeconds  float64      `json:"wall_seconds"`
	VmHWMStartKB int64        `json:"vmhwm_start_kb"`
	VmHWMEndKB   int64        `json:"vmhwm_end_kb"`
}

// verifyChild verifies the log at --redis-url with the JWKS at --jwks alone
// and prints a childReport. It returns the exit status.
func verifyChild(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("auditbench verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	redisURL := fs.String("redis-url", "", "")
	prefix := fs.String("prefix", store.DefaultPrefix, "")
	jwks := fs.String("jwks", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "auditbench verify:", err)
		return 1
	}
	var out childReport
	out.VmHWMStartKB = vmHWM()
	b, err := os.ReadFile(*jwks)
	if err != nil {
		return fail(err)
	}
	keys, err := token.ParseJWKS(b)
	if err != nil {
		return fail(err)
	}
	st, err := store.Open(*redisURL, store.Options{Prefix: *prefix})
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	t := time.Now()
	// As the CLI does with its default interval of one minute.
	out.Report, err = audit.NewLog(st, time.Now).Verify(context.Background(), keys, audit.VerifyOptions{MaxUncovered: 2 * time.Minute})
	if err != nil {
		return fail(err)
	}
	out.WallSeconds = time.Since(t).Seconds()
	out.VmHWMEndKB = vmHWM()
	if err := json.NewEncoder(stdout).Encode(out); err != nil {
		return fail(err)
	}
	return 0
}

// vmHWM is this process's peak resident set size in KiB, from
// /proc/self/status (0 when unknown).
func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// runVerify runs a verifying process (this program as its child, or the
// CLI) and measures its wall time and its peak RSS. cli: its output is the
// CLI's audit.Report; timeV: run it under /usr/bin/time -v when there.
func runVerify(ctx context.Context, how, bin string, args, environ []string, cli bool) (*verify, error) {
	v := &verify{How: how, VerifyCommand: strings.Join(append([]string{filepath.Base(bin)}, args...), " ")}
	path, argv := bin, args
	timeV := ""
	if cli {
		if p, err := exec.LookPath("/usr/bin/time"); err == nil {
			timeV = p
			path, argv = p, append([]string{"-v", bin}, args...)
		}
	}
	cmd := exec.CommandContext(ctx, path, argv...)
	cmd.Env = environ
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t := time.Now()
	err := cmd.Run()
	wall := time.Since(t)
	if err != nil {
		return nil, fmt.Errorf("%s: %v\n%s%s", how, err, clip(stdout.String()), clip(stderr.String()))
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		v.PeakRSSMB = float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	if timeV != "" {
		if kb := timeVPeak(stderr.String()); kb > 0 {
			mb := float64(kb) / 1024
			v.TimeVPeakMB = &mb
		}
	}
	var rep audit.Report
	if cli {
		v.WallSeconds = wall.Seconds()
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			return nil, fmt.Errorf("%s: unreadable output: %v: %s", how, err, clip(stdout.String()))
		}
	} else {
		var c childReport
		if err := json.Unmarshal(stdout.Bytes(), &c); err != nil {
			return nil, fmt.Errorf("%s: unreadable output: %v: %s", how, err, clip(stdout.String()))
		}
		rep, v.WallSeconds = c.Report, c.WallSeconds
		start, end := float64(c.VmHWMStartKB)/1024, float64(c.VmHWMEndKB)/1024
		v.VmHWMStartMB, v.VmHWMEndMB = &start, &end
	}
	v.OK, v.Problem = rep.OK, rep.Problem
	v.Checkpoints, v.Verified, v.Uncovered = rep.Checkpoints, rep.Verified, rep.Uncovered
	if v.WallSeconds > 0 {
		v.EventsPerSec = float64(rep.Verified) / v.WallSeconds
	}
	return v, nil
}

// timeVPeak reads "Maximum resident set size (kbytes): N" from /usr/bin/time
// -v's report.
func timeVPeak(s string) int64 {
	for line := range strings.Lines(s) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Maximum resident set size (kbytes):"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}

// ---------------------------------------------------------------------------
// Processes.

// startRedis starts a redis-server persisting nothing on a free loopback
// port; the kernel kills it should this program die first.
func startRedis(ctx context.Context, dir string) (string, func(), error) {
	return devproc.StartRedis(ctx, dir)
}
