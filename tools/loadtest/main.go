// Command loadtest puts the service under load over HTTP and compares what it
// sustains with floors measured in the same run. A floor is the cheapest
// possible way to do the same job: a bare chi JSON handler for HTTP itself,
// one Ed25519 signature and one Redis SET NX PX for a mint, one Ed25519
// verify, one GETDEL and one signature for a redeem, one Redis GET for a
// session check. The mint and redeem floors each have a durable variant
// whose Redis work is one script: the state change (SET NX PX, GETDEL) and
// an XADD of an audit event of the service's size, as the service's scripts
// append theirs. The floors are served by this process, on the same machine
// and the same redis-server as the service, and driven by the same load
// generator, so each ratio says how much the service adds on top, here and
// now.
//
// By default it starts a redis-server and the service (built from
// ./cmd/impersonator) on free loopback ports and stops both when it exits,
// Ctrl-C included; with --url and --forest-secret it targets a running
// service instead. Run it with `make loadtest`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/devproc"
)

const (
	mintPath    = "/forest/actions/impersonate"
	loginPath   = "/impersonation/login"
	sessionPath = "/impersonation/session"

	// mintBody is internal/action/testdata/requests/legacy-users-42.json:
	// what forest-express posts when the Impersonate action runs on users 42.
	mintBody = `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],"values":{"Reason":"ticket 1234"},"all_records":false,"all_records_ids_excluded":[],"all_records_subset_query":{},"smart_action_id":"users-impersonate","signed_approval_request":null}}}`

	// policy lets the load's one admin mint as often as it can: the
	// per-admin rate (default 30/h) would refuse after 30 mints.
	policy = "collections: [users]\nmin_reason_length: 8\nrate: 0\n"

	// tokenTTL is the service's default token lifetime. Tokens (and the
	// redeem floor's keys) are prepared in batches that are used up well
	// within it: preparing one batch and redeeming it take at most
	// batchBudget together.
	tokenTTL    = 60 * time.Second
	batchBudget = 40 * time.Second
	maxBatch    = 100_000

	// calibration is how many sequential requests measure a floor's
	// allocations (plus calibrationWarm first, not counted).
	calibration     = 1000
	calibrationWarm = 20
)

func main() {
	devproc.Main("loadtest", "the redis-server and the service it started are stopped", run)
}

type options struct {
	duration     time.Duration
	concurrency  int
	url          string
	forestSecret string
	redisURL     string
	bin          string
	jsonPath     string
	maxRequests  int64
	profileDir   string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "timed length of each scenario (100ms to 10m)")
	fs.IntVar(&o.concurrency, "concurrency", 32, "requests in flight, over as many keep-alive HTTP/1.1 connections (1 to 1024)")
	fs.StringVar(&o.url, "url", "", "target the running service at this loopback base URL instead of starting one (needs --forest-secret)")
	fs.StringVar(&o.forestSecret, "forest-secret", "", "with --url: the service's FOREST_AUTH_SECRET, to sign the Forest admin JWT")
	fs.StringVar(&o.redisURL, "redis-url", "", "with --url: the service's Redis, for the floors (default: a redis-server started here, which is not the service's)")
	fs.StringVar(&o.bin, "bin", "", "impersonator binary to start (default: go build ./cmd/impersonator into a temporary folder)")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results to this file as JSON")
	fs.Int64Var(&o.maxRequests, "max-requests", 2_000_000, "at most this many timed requests per scenario")
	fs.StringVar(&o.profileDir, "profile", "", "record the service's CPU profile over each service scenario's timed phases into this folder (builds the service with -tags pprof)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: loadtest [flags]\n\nLoads the service over HTTP (mint, redeem, session check) and the floors served here, and prints each with its ratio to its floor.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var problems []error
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if o.duration < 100*time.Millisecond || o.duration > 10*time.Minute {
		problems = append(problems, fmt.Errorf("--duration %s is outside [100ms, 10m]", o.duration))
	}
	if o.concurrency < 1 || o.concurrency > 1024 {
		problems = append(problems, fmt.Errorf("--concurrency %d is outside [1, 1024]", o.concurrency))
	}
	if o.maxRequests < 1 {
		problems = append(problems, errors.New("--max-requests must be at least 1"))
	}
	if (o.url == "") != (o.forestSecret == "") {
		problems = append(problems, errors.New("--url and --forest-secret go together"))
	}
	if o.profileDir != "" && (o.url != "" || o.bin != "") {
		problems = append(problems, errors.New("--profile builds and starts the service itself: not with --url or --bin"))
	}
	if o.url == "" && o.redisURL != "" {
		problems = append(problems, errors.New("--redis-url only goes with --url (otherwise the floors use the redis-server started here)"))
	}
	if o.url != "" {
		if err := devproc.Loopback(o.url); err != nil {
			problems = append(problems, fmt.Errorf("--url: %w", err))
		}
		if o.bin != "" {
			problems = append(problems, errors.New("--bin has nothing to start with --url"))
		}
	}
	if o.redisURL != "" {
		if err := devproc.Loopback(o.redisURL); err != nil {
			problems = append(problems, fmt.Errorf("--redis-url: %w", err))
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	// A hard bound on the whole run, whatever happens: eight timed
	// scenarios, the batches prepared for the redeems, start and stop.
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute+20*o.duration)
	defer cancel()

	e, err := setUp(ctx, o)
	if err != nil {
		return err
	}
	defer e.close()

	rep, err := measure(ctx, o, e, stderr)
	if err != nil {
		return err
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
	return nil
}

// ---------------------------------------------------------------------------
// The processes: redis-server and the service.

// env is what the scenarios run against, and how to stop it.
type env struct {
	base         string        // the service's base URL
	forestSecret string        // its FOREST_AUTH_SECRET
	rdb          *redis.Client // the floors' Redis
	managed      bool          // started here
	floorRedis   string        // which Redis the floors use, for the report
	sameRedis    bool          // the floors' Redis is the service's
	pprofAddr    string        // the service's dev profiling listener (--profile)
	profiling    bool
	redisAddr    string
	cleanups     []func()
}

func (e *env) close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
}

func setUp(ctx context.Context, o *options) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	tmp, err := os.MkdirTemp("", "impersonator-loadtest-")
	if err != nil {
		return nil, err
	}
	e.cleanups = append(e.cleanups, func() { os.RemoveAll(tmp) })

	if o.redisURL != "" {
		opts, err := redis.ParseURL(o.redisURL)
		if err != nil {
			return nil, fmt.Errorf("--redis-url: %w", err)
		}
		e.rdb = redis.NewClient(opts)
		e.floorRedis, e.sameRedis = "the service's Redis (--redis-url)", true
	} else {
		if e.redisAddr, err = startRedis(ctx, e, tmp); err != nil {
			return nil, err
		}
		e.rdb = redis.NewClient(&redis.Options{Addr: e.redisAddr})
		e.floorRedis, e.sameRedis = "the service's redis-server", o.url == ""
		if o.url != "" {
			e.floorRedis = "a redis-server started here, not the service's (give --redis-url)"
		}
	}
	rdb := e.rdb
	e.cleanups = append(e.cleanups, func() { rdb.Close() })
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("the floors' Redis: %w", err)
	}

	if o.url != "" {
		e.base, e.forestSecret = strings.TrimRight(o.url, "/"), o.forestSecret
		return e, nil
	}
	e.managed, e.profiling = true, o.profileDir != ""
	bin := o.bin
	if bin == "" {
		var tags []string
		if o.profileDir != "" {
			if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
				return nil, fmt.Errorf("--profile: %w", err)
			}
			tags = []string{"pprof"}
		}
		if bin, err = devproc.BuildCLI(ctx, tmp, tags...); err != nil {
			return nil, err
		}
		if o.profileDir != "" {
			// Beside the profiles, for go tool pprof's symbols.
			if err := copyFile(bin, filepath.Join(o.profileDir, "impersonator")); err != nil {
				return nil, err
			}
		}
	}
	return e, startService(ctx, e, bin, tmp)
}

// proc is a subprocess: in its own process group, so that a Ctrl-C in the
// terminal reaches only this program, which then stops it; and killed by
// the kernel should this program die without stopping it.
type proc struct {
	cmd    *exec.Cmd
	out    *tail
	exited chan struct{}
}

func startProc(path string, args, environ []string) (*proc, error) {
	p := &proc{out: &tail{}, exited: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = environ
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.WaitDelay = time.Second
	devproc.Isolate(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop asks the process to stop (SIGTERM), and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// tail keeps the last 8 KiB a process wrote, to explain its failures.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - 8<<10; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// startRedis starts a redis-server for the run; it is stopped with the
// run's other processes.
func startRedis(ctx context.Context, e *env, dir string) (string, error) {
	addr, stop, err := devproc.StartRedis(ctx, dir)
	if err != nil {
		return "", err
	}
	e.cleanups = append(e.cleanups, stop)
	return addr, nil
}

func startService(ctx context.Context, e *env, bin, tmp string) error {
	keysDir := filepath.Join(tmp, "keys")
	if err := os.Mkdir(keysDir, 0o700); err != nil {
		return err
	}
	if b, err := exec.CommandContext(ctx, bin, "keys", "generate", "--dir", keysDir).CombinedOutput(); err != nil {
		return fmt.Errorf("impersonator keys generate: %v: %s", err, b)
	}
	policyFile := filepath.Join(tmp, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		return err
	}
	secret := make([]byte, 24)
	rand.Read(secret)
	// base64url: 64 letters, so the secret has the 16 distinct characters
	// serve requires (hex's 16 letters would sometimes fall short).
	e.forestSecret = base64.RawURLEncoding.EncodeToString(secret)

	var last error
	for range 3 { // a free port can be taken between the check and the start
		port, err := devproc.FreePort()
		if err != nil {
			return err
		}
		listen := net.JoinHostPort("127.0.0.1", port)
		environ := devproc.Environ()
		if e.profiling {
			pport, err := devproc.FreePort()
			if err != nil {
				return err
			}
			e.pprofAddr = net.JoinHostPort("127.0.0.1", pport)
			environ = append(environ, "IMPERSONATOR_DEV_PPROF="+e.pprofAddr)
		}
		p, err := startProc(bin, []string{"serve"}, append(environ,
			"REDIS_URL=redis://"+e.redisAddr,
			"IMPERSONATOR_LISTEN="+listen,
			"FOREST_AUTH_SECRET="+e.forestSecret,
			"IMPERSONATOR_KEYS_DIR="+keysDir,
			"IMPERSONATOR_POLICY_FILE="+policyFile,
			"IMPERSONATOR_LOGIN_RATE=0",
			"IMPERSONATOR_DELIVERY=webhook",
			"IMPERSONATOR_LOG_LEVEL=warn",
			"IMPERSONATOR_SHUTDOWN_DRAIN=0s", // no load balancer to wait for
			// Signed audit checkpoints run every minute by default and
			// would land in some timed phases and not others.
			"IMPERSONATOR_CHECKPOINT_INTERVAL=1h",
		))
		if err != nil {
			return err
		}
		base := "http://" + listen
		if err := waitReady(ctx, p, base+"/readyz"); err != nil {
			p.stop(time.Second)
			last = fmt.Errorf("the service did not become ready: %v\n%s", err, p.out)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		e.base = base
		e.cleanups = append(e.cleanups, func() { p.stop(3 * time.Second) })
		return nil
	}
	return last
}

func waitReady(ctx context.Context, p *proc, readyz string) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if !p.running() {
			return errors.New("it exited")
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, readyz, nil)
		if res, err := c.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(25 * time.Millisecond)
	}
	return errors.New("no 200 from /readyz within 30s")
}

// ---------------------------------------------------------------------------
// The load generator.

// loader sends requests from a fixed number of workers, each with one
// keep-alive HTTP/1.1 connection to each host.
type loader struct {
	client      *http.Client
	concurrency int
	maxRequests int64
}

func newLoader(o *options) *loader {
	tr := &http.Transport{
		Proxy:               nil, // loopback only, whatever the environment says
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * o.concurrency,
		MaxIdleConnsPerHost: o.concurrency, // the default (2) would close and reopen connections all along
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &loader{client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, concurrency: o.concurrency, maxRequests: o.maxRequests}
}

// tally is what the timed phases of one scenario saw.
type tally struct {
	mu       sync.Mutex
	requests int64 // completed, errors included
	errors   int64 // transport errors and unexpected answers
	elapsed  time.Duration
	hist     histogram // latencies of the successful requests
	firstErr string
	cpu      cpuTime // over the timed phases
}

func (t *tally) merge(h *histogram, n, errs int64, firstErr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.requests += n
	t.errors += errs
	t.hist.add(h)
	if t.firstErr == "" {
		t.firstErr = firstErr
	}
}

// next returns the i-th request of a phase, or false when there is none
// left (a batch of single-use tokens is used up).
type nextFunc func(ctx context.Context, i int64) (*http.Request, bool)

// checkFunc says whether an answer is the expected one.
type checkFunc func(status int, body []byte) bool

func ok200(status int, _ []byte) bool { return status == http.StatusOK }

// phase sends requests from l.concurrency workers until limit has passed,
// next runs out, the scenario's request cap is reached or ctx ends, and adds
// what it saw to t. It returns the requests completed and the time from the
// first request sent to the last answer read.
func (l *loader) phase(ctx context.Context, limit time.Duration, next nextFunc, check checkFunc, t *tally) (int64, time.Duration) {
	budget := l.maxRequests - t.requests
	var seq atomic.Int64
	var completed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(limit)
	for range l.concurrency {
		wg.Go(func() {
			h := new(histogram)
			var body bytes.Buffer
			var n, errs int64
			firstErr := ""
			fail := func(msg string) {
				errs++
				if firstErr == "" {
					firstErr = msg
				}
			}
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := seq.Add(1) - 1
				if i >= budget {
					break
				}
				req, more := next(ctx, i)
				if !more {
					break
				}
				t0 := time.Now()
				res, err := l.client.Do(req)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					n++
					fail(err.Error())
					continue
				}
				body.Reset()
				_, err = body.ReadFrom(res.Body)
				res.Body.Close()
				d := time.Since(t0)
				n++
				switch {
				case err != nil:
					fail(err.Error())
				case !check(res.StatusCode, body.Bytes()):
					fail(fmt.Sprintf("%s %s: %d %s", req.Method, req.URL.Path, res.StatusCode, clip(body.Bytes())))
				default:
					h.record(d)
				}
			}
			completed.Add(n)
			t.merge(h, n, errs, firstErr)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.mu.Lock()
	t.elapsed += elapsed
	t.mu.Unlock()
	return completed.Load(), elapsed
}

// each runs fn(i) for every i in [0, n) from l.concurrency workers, untimed,
// and returns the first error.
func (l *loader) each(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var seq atomic.Int64
	var wg sync.WaitGroup
	for range min(l.concurrency, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(seq.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// warm opens the workers' connections to url's host before anything is
// timed: rounds of l.concurrency simultaneous requests.
func (l *loader) warm(ctx context.Context, url string) error {
	for range 3 {
		if err := l.each(ctx, l.concurrency, func(ctx context.Context, _ int) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			res, err := l.client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, res.Body)
			return res.Body.Close()
		}); err != nil {
			return err
		}
	}
	return nil
}

func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// ---------------------------------------------------------------------------
// Latencies.

const (
	histBuckets = 2048
	histGrowth  = 1.01 // each bucket 1% wider than the one before
	histMin     = time.Microsecond
)

var logGrowth = math.Log(histGrowth)

// histogram counts latencies in logarithmic buckets 1% wide from 1µs up to
// past ten minutes: the same small memory however many requests, and
// percentiles within 1%.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
}

func bucket(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	return min(histBuckets-1, 1+int(math.Log(float64(d)/float64(histMin))/logGrowth))
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucket(d)]++
	h.n++
}

func (h *histogram) add(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q ≤ 1): the geometric middle of the
// bucket that holds it; 0 without samples.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == 0 {
				return histMin
			}
			return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)-0.5))
		}
	}
	return time.Duration(float64(histMin) * math.Pow(histGrowth, histBuckets))
}

// ---------------------------------------------------------------------------
// The floors, served here.

// floors serves the cheapest possible version of each job on the same
// Redis as the service: nothing but the unavoidable cryptography and round
// trips.
type floors struct {
	rdb        *redis.Client
	pub        ed25519.PublicKey
	priv       ed25519.PrivateKey
	tokenInput []byte // as long as a real token's header.payload
	sessInput  []byte // as long as a real session cookie's header.payload
	prefix     string // every key, away from the service's {impersonator}
	seq        atomic.Int64
	batch      atomic.Int64
	// The durable floors' scripts and the events they append: a real
	// impersonation.minted and impersonation.redeemed event's bytes.
	mintScript, redeemScript *redis.Script
	events                   durableEvents
}

// durableEvents are the events the durable floors append, and where their
// bytes come from.
type durableEvents struct {
	Minted   []byte `json:"-"`
	Redeemed []byte `json:"-"`
	// MintedBytes and RedeemedBytes are their sizes, for the report.
	MintedBytes   int    `json:"minted_bytes"`
	RedeemedBytes int    `json:"redeemed_bytes"`
	Source        string `json:"source"`
}

// The durable floors' scripts: KEYS[1] the token id's key, KEYS[2] the
// audit stream; each appends its event only when its state change happened.
const (
	mintDurableLua = `if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
return 1`
	redeemDurableLua = `if not redis.call('GETDEL', KEYS[1]) then return 0 end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])
return 1`
)

// streamKey is the durable floors' audit stream.
func (f *floors) streamKey() string { return f.prefix + "audit" }

var okJSON = []byte(`{"ok":true}` + "\n")

func newFloors(rdb *redis.Client, tokenInputLen, sessInputLen int, events durableEvents) *floors {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return &floors{
		rdb: rdb, pub: pub, priv: priv,
		tokenInput:   bytes.Repeat([]byte("x"), tokenInputLen),
		sessInput:    bytes.Repeat([]byte("x"), sessInputLen),
		prefix:       fmt.Sprintf("{loadtest-%d}:", os.Getpid()),
		mintScript:   redis.NewScript(mintDurableLua),
		redeemScript: redis.NewScript(redeemDurableLua),
		events:       events,
	}
}

func (f *floors) routes() http.Handler {
	r := chi.NewRouter()
	r.Get("/floor/bare", f.bare)
	r.Post("/floor/mint", f.mint)
	r.Post("/floor/redeem", f.redeem)
	r.Post("/floor/mint-durable", f.mintDurable)
	r.Post("/floor/redeem-durable", f.redeemDurable)
	r.Get("/floor/session", f.session)
	return r
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// bare is the bare HTTP floor: routing and a JSON answer.
func (f *floors) bare(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, okJSON) }

// mint is the mint floor: one Ed25519 signature over a token-sized payload
// and one SET NX PX of a fresh key.
func (f *floors) mint(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		writeJSON(w, http.StatusBadRequest, nil)
		return
	}
	sig := ed25519.Sign(f.priv, f.tokenInput)
	key := f.prefix + "m:" + strconv.FormatInt(f.seq.Add(1), 10)
	if err := f.rdb.Do(r.Context(), "set", key, "1", "nx", "px", tokenTTL.Milliseconds()).Err(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, nil)
		return
	}
	writeJSON(w, http.StatusOK, []byte(`{"token":"`+base64.RawURLEncoding.EncodeToString(sig)+`"}`))
}

// mintDurable is the durable mint floor: the mint floor's signature, and
// one script that sets the fresh key (SET NX PX) and appends a minted
// event of the service's size to the audit stream.
func (f *floors) mintDurable(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		writeJSON(w, http.StatusBadRequest, nil)
		return
	}
	sig := ed25519.Sign(f.priv, f.tokenInput)
	key := f.prefix + "m:" + strconv.FormatInt(f.seq.Add(1), 10)
	n, err := f.mintScript.Run(r.Context(), f.rdb, []string{key, f.streamKey()}, tokenTTL.Milliseconds(), f.events.Minted).Int()
	if err != nil || n != 1 {
		writeJSON(w, http.StatusServiceUnavailable, nil)
		return
	}
	writeJSON(w, http.StatusOK, []byte(`{"token":"`+base64.RawURLEncoding.EncodeToString(sig)+`"}`))
}

// redeem is the redeem floor: one Ed25519 verify of a token-sized token,
// one GETDEL of its id and one Ed25519 signature over a session-sized
// payload. The token is "<id>.<filler>.<signature>".
func (f *floors) redeem(w http.ResponseWriter, r *http.Request) {
	f.redeemWith(w, r, func(ctx context.Context, key string) (bool, error) {
		err := f.rdb.GetDel(ctx, key).Err()
		if errors.Is(err, redis.Nil) {
			return false, nil // used twice, or expired
		}
		return err == nil, err
	})
}

// redeemDurable is the durable redeem floor: the redeem floor's verify and
// signature, and one script that consumes the id (GETDEL) and appends a
// redeemed event of the service's size to the audit stream.
func (f *floors) redeemDurable(w http.ResponseWriter, r *http.Request) {
	f.redeemWith(w, r, func(ctx context.Context, key string) (bool, error) {
		n, err := f.redeemScript.Run(ctx, f.rdb, []string{key, f.streamKey()}, f.events.Redeemed).Int()
		return n == 1, err
	})
}

// redeemWith verifies the token, consumes its id's key with consume (true:
// consumed now) and signs a session.
func (f *floors) redeemWith(w http.ResponseWriter, r *http.Request, consume func(ctx context.Context, key string) (bool, error)) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	tok, ok1 := bytes.CutPrefix(body, []byte(`{"token":"`))
	tok, ok2 := bytes.CutSuffix(tok, []byte(`"}`))
	dot := bytes.LastIndexByte(tok, '.')
	if err != nil || !ok1 || !ok2 || dot < 0 {
		writeJSON(w, http.StatusBadRequest, nil)
		return
	}
	input := tok[:dot]
	var sig [ed25519.SignatureSize]byte
	if n, err := base64.RawURLEncoding.Decode(sig[:], tok[dot+1:]); err != nil || n != len(sig) || !ed25519.Verify(f.pub, input, sig[:]) {
		writeJSON(w, http.StatusUnauthorized, nil)
		return
	}
	id, _, _ := bytes.Cut(input, []byte("."))
	ok, err := consume(r.Context(), f.prefix+"r:"+string(id))
	switch {
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, nil)
		return
	case !ok:
		writeJSON(w, http.StatusUnauthorized, nil) // used twice, or expired
		return
	}
	sess := ed25519.Sign(f.priv, f.sessInput)
	writeJSON(w, http.StatusOK, []byte(`{"session":"`+base64.RawURLEncoding.EncodeToString(sess)+`"}`))
}

// session is the session floor: one Redis round trip (GET).
func (f *floors) session(w http.ResponseWriter, r *http.Request) {
	if err := f.rdb.Get(r.Context(), f.prefix+"s").Err(); err != nil {
		writeJSON(w, http.StatusUnauthorized, nil)
		return
	}
	writeJSON(w, http.StatusOK, okJSON)
}

// cleared is what clear deleted.
type cleared struct {
	Keys   int64 // keys, the audit stream counting as one
	Events int64 // entries of the durable floors' audit stream
}

// clear deletes the keys the mint and redeem floors and their durable
// variants left (untimed): the token ids live for the tokens' lifetime,
// the durable floors' audit stream for ever, and a hundred thousand keys
// or entries would otherwise weigh on the phases after theirs (a bigger
// keyspace, and Redis growing its key table through them: measured with
// perf, a fifth of Redis's time in the next phase went to rehashing).
// Every key under the floors' prefix goes but the session floor's; clear
// then checks that none is left.
func (f *floors) clear(ctx context.Context) (cleared, error) {
	var c cleared
	events, err := f.rdb.XLen(ctx, f.streamKey()).Result()
	if err != nil {
		return c, fmt.Errorf("clearing the floors' keys: %w", err)
	}
	keep := f.prefix + "s"
	iter := f.rdb.Scan(ctx, 0, f.prefix+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := f.rdb.Unlink(ctx, batch...).Result()
		c.Keys += n
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		if iter.Val() == keep {
			continue
		}
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			if err := flush(); err != nil {
				return c, fmt.Errorf("clearing the floors' keys: %w", err)
			}
		}
	}
	if err := errors.Join(iter.Err(), flush()); err != nil {
		return c, fmt.Errorf("clearing the floors' keys: %w", err)
	}
	c.Events = events
	left := f.rdb.Scan(ctx, 0, f.prefix+"*", 1000).Iterator()
	for left.Next(ctx) {
		if left.Val() != keep {
			return c, fmt.Errorf("clearing the floors' keys: %s is left", left.Val())
		}
	}
	if err := left.Err(); err != nil {
		return c, fmt.Errorf("clearing the floors' keys: %w", err)
	}
	return c, nil
}

// clearFloor clears the floors' keys after the floor scenario last added to
// rep, and records how many there were.
func (r *runner) clearFloor(ctx context.Context, rep *report) error {
	c, err := r.f.clear(ctx)
	last := &rep.Scenarios[len(rep.Scenarios)-1]
	last.ClearedKeys, last.ClearedEvents = c.Keys, c.Events
	return err
}

// serviceAudit is the service's audit stream (internal/store: the default
// prefix and "audit"), whose events the durable floors copy.
const serviceAudit = "{impersonator}:audit"

// standInEvent is the durable floors' event when the service's cannot be
// read: 400 bytes, the size of a minted or redeemed event of a short
// reason and a browser's user agent.
const standInEvent = 400

// serviceEvents returns the durable floors' events: the bytes of the
// newest impersonation.minted and impersonation.redeemed events of the
// service's audit stream (the run's first impersonation wrote them), or
// 400-byte stand-ins when the floors' Redis is not the service's.
func serviceEvents(ctx context.Context, e *env) (durableEvents, error) {
	if !e.sameRedis {
		b := bytes.Repeat([]byte("x"), standInEvent)
		return durableEvents{Minted: b, Redeemed: b, MintedBytes: len(b), RedeemedBytes: len(b),
			Source: "400-byte stand-ins: the floors' Redis is not the service's (give --redis-url)"}, nil
	}
	msgs, err := e.rdb.XRevRangeN(ctx, serviceAudit, "+", "-", 100).Result()
	if err != nil {
		return durableEvents{}, fmt.Errorf("reading the service's audit stream %s: %w", serviceAudit, err)
	}
	var d durableEvents
	for _, m := range msgs {
		ev, _ := m.Values["e"].(string)
		var head struct {
			Type string `json:"type"`
		}
		if json.Unmarshal([]byte(ev), &head) != nil {
			continue
		}
		switch {
		case head.Type == "impersonation.minted" && d.Minted == nil:
			d.Minted = []byte(ev)
		case head.Type == "impersonation.redeemed" && d.Redeemed == nil:
			d.Redeemed = []byte(ev)
		}
	}
	if d.Minted == nil || d.Redeemed == nil {
		return durableEvents{}, fmt.Errorf("the service's audit stream %s has no impersonation.minted or no impersonation.redeemed event after the first impersonation", serviceAudit)
	}
	d.MintedBytes, d.RedeemedBytes = len(d.Minted), len(d.Redeemed)
	d.Source = "the service's audit stream: its first impersonation's events"
	return d, nil
}

// seed prepares n single-use tokens for the redeem floor: signed here, their
// ids set in Redis with the tokens' lifetime. It returns the login bodies.
func (f *floors) seed(ctx context.Context, n int) ([][]byte, error) {
	b := f.batch.Add(1)
	bodies := make([][]byte, n)
	ids := make([]string, n)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				ids[i] = fmt.Sprintf("%d-%d", b, i)
				input := ids[i] + "."
				input += strings.Repeat("x", max(0, len(f.tokenInput)-len(input)))
				sig := ed25519.Sign(f.priv, []byte(input))
				bodies[i] = []byte(`{"token":"` + input + "." + base64.RawURLEncoding.EncodeToString(sig) + `"}`)
			}
		})
	}
	wg.Wait()
	for start := 0; start < n; start += 1000 {
		pipe := f.rdb.Pipeline()
		for _, id := range ids[start:min(n, start+1000)] {
			pipe.Set(ctx, f.prefix+"r:"+id, "1", tokenTTL)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("seeding the redeem floor: %w", err)
		}
	}
	return bodies, nil
}

// allocsPerRequest sends reqs (raw HTTP/1.1 requests) one after the other
// over one connection with a client that allocates nothing per request,
// so that this process's allocations over them are the floor server's
// own. The first calibrationWarm are not counted.
func allocsPerRequest(addr string, reqs [][]byte) (float64, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 64<<10)
	do := func(b []byte) error {
		if _, err := conn.Write(b); err != nil {
			return err
		}
		return readResponse(br)
	}
	for _, b := range reqs[:calibrationWarm] {
		if err := do(b); err != nil {
			return 0, err
		}
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for _, b := range reqs[calibrationWarm:] {
		if err := do(b); err != nil {
			return 0, err
		}
	}
	runtime.ReadMemStats(&m1)
	return float64(m1.Mallocs-m0.Mallocs) / float64(len(reqs)-calibrationWarm), nil
}

// readResponse reads one HTTP/1.1 response with a Content-Length and
// expects 200, without allocating.
func readResponse(br *bufio.Reader) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("floor answered %q", line)
	}
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		const cl = "content-length:"
		if len(line) > len(cl) && bytes.EqualFold(line[:len(cl)], []byte(cl)) {
			length = 0
			for _, c := range bytes.TrimSpace(line[len(cl):]) {
				length = length*10 + int(c-'0')
			}
		}
	}
	if length < 0 {
		return errors.New("floor answered without Content-Length")
	}
	_, err = br.Discard(length)
	return err
}

func rawRequest(req *http.Request) []byte {
	var b bytes.Buffer
	_ = req.Write(&b)
	return b.Bytes()
}

// ---------------------------------------------------------------------------
// The scenarios.

type result struct {
	Name     string  `json:"name"`
	Kind     string  `json:"kind"` // service or floor
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Seconds  float64 `json:"seconds"`
	// ReqPerSec counts the successful requests.
	ReqPerSec float64 `json:"req_per_s"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	// AllocsPerRequest is the server's heap allocations per request, null
	// when they could not be measured.
	AllocsPerRequest *float64 `json:"allocs_per_request"`
	AllocsSource     string   `json:"allocs_source"`
	// CPU time per successful request over the timed phases, in µs, by
	// process; null where not measured (see cpuTime).
	CPU        cpuPerRequest `json:"cpu_us_per_request"`
	FirstError string        `json:"first_error"`
	// ClearedKeys: the floor's keys deleted after its phase (mint and
	// redeem floors), so that they do not weigh on the phases after it.
	ClearedKeys int64 `json:"cleared_keys,omitempty"`
	// ClearedEvents: the durable floors' audit entries deleted after
	// their phase.
	ClearedEvents int64 `json:"cleared_events,omitempty"`
	// Scripts: Redis's own time per script call (INFO commandstats over
	// the timed phases), by script command; absent where the scenario's
	// Redis is not the one read.
	Scripts []scriptCalls `json:"redis_scripts,omitempty"`
}

// scriptCalls is one script command's calls over a scenario's timed
// phases, from INFO commandstats: per successful request, and Redis's time
// per call (the script's own commands included).
type scriptCalls struct {
	Command         string  `json:"command"`
	Calls           int64   `json:"calls"`
	CallsPerRequest float64 `json:"calls_per_request"`
	UsecPerCall     float64 `json:"usec_per_call"`
}

type cpuPerRequest struct {
	Service  *float64 `json:"service"`
	Redis    *float64 `json:"redis"`
	Loadtest *float64 `json:"loadtest"`
}

type ratio struct {
	Name     string `json:"name"`
	Scenario string `json:"scenario"`
	Floor    string `json:"floor"`
	// Cost is the time per request relative to the floor: the floor's
	// req/s over the scenario's.
	Cost float64 `json:"cost"`
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
}

type report struct {
	Target      string   `json:"target"`
	Managed     bool     `json:"managed"`
	FloorRedis  string   `json:"floor_redis"`
	Duration    string   `json:"duration"`
	Concurrency int      `json:"concurrency"`
	GOMAXPROCS  int      `json:"gomaxprocs"`
	NumCPU      int      `json:"num_cpu"`
	GoVersion   string   `json:"go_version"`
	Scenarios   []result `json:"scenarios"`
	// DurableEvents: what the durable floors append, and whence.
	DurableEvents durableEvents `json:"durable_events"`
	Ratios        []ratio       `json:"ratios"`
	Profiles      []string      `json:"profiles,omitempty"` // --profile
}

// runner holds what every scenario needs.
type runner struct {
	o      *options
	e      *env
	l      *loader
	bearer string // "Bearer <Forest admin JWT>"
	cookie string // "name=value" of one live session
	floor  string // the floors' base URL
	f      *floors
	// scrapeCost is what one /metrics scrape allocates in the service; ok
	// says whether /metrics answers with go_memstats_mallocs_total.
	scrapeCost float64
	metricsOK  bool
	progress   io.Writer // one line per scenario, so that a long run is not silent
	profiles   []string  // the CPU profiles recorded (--profile)
}

func measure(ctx context.Context, o *options, e *env, progress io.Writer) (*report, error) {
	r := &runner{o: o, e: e, l: newLoader(o), progress: progress}
	defer r.l.client.CloseIdleConnections()
	admin, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"id": 1001, "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "team": "Support",
		"role": "Admin", "permissionLevel": "admin", "renderingId": 7, "exp": time.Now().Add(2 * time.Hour).Unix(),
	}).SignedString([]byte(e.forestSecret))
	if err != nil {
		return nil, err
	}
	r.bearer = "Bearer " + admin

	// One impersonation first: it proves the setup works and gives the
	// session cookie and the sizes the floors sign.
	tok, err := r.mintOne(ctx)
	if err != nil {
		return nil, err
	}
	if r.cookie, err = r.redeemOne(ctx, tok); err != nil {
		return nil, err
	}
	_, sessJWT, _ := strings.Cut(r.cookie, "=")
	events, err := serviceEvents(ctx, e)
	if err != nil {
		return nil, err
	}
	r.f = newFloors(e.rdb, strings.LastIndexByte(tok, '.'), strings.LastIndexByte(sessJWT, '.'), events)
	if err := e.rdb.Set(ctx, r.f.prefix+"s", "1", time.Hour).Err(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: r.f.routes(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 32 << 10}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	r.floor = "http://" + ln.Addr().String()

	r.metricsOK = r.measureScrape(ctx)
	if err := r.l.warm(ctx, e.base+"/healthz"); err != nil {
		return nil, fmt.Errorf("warming connections to the service: %w", err)
	}
	if err := r.l.warm(ctx, r.floor+"/floor/bare"); err != nil {
		return nil, fmt.Errorf("warming connections to the floors: %w", err)
	}

	rep := &report{Target: e.base, Managed: e.managed, FloorRedis: e.floorRedis, Duration: o.duration.String(), DurableEvents: events,
		Concurrency: o.concurrency, GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(), GoVersion: runtime.Version()}
	add := func(res result, err error) error {
		if err == nil {
			rep.Scenarios = append(rep.Scenarios, res)
		}
		return err
	}
	get := func(url, cookie string) nextFunc {
		return func(ctx context.Context, _ int64) (*http.Request, bool) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if cookie != "" {
				req.Header.Set("Cookie", cookie)
			}
			return req, true
		}
	}
	mint := func(url string) nextFunc {
		return func(ctx context.Context, _ int64) (*http.Request, bool) { return r.mintRequest(ctx, url), true }
	}
	mintOK := func(status int, body []byte) bool {
		return status == http.StatusOK && bytes.Contains(body, []byte(`"token":"`))
	}

	if err := add(r.steady(ctx, "bare-http", get(r.floor+"/floor/bare", ""), ok200, r.floorAllocs(get(r.floor+"/floor/bare", "")))); err != nil {
		return nil, err
	}
	if err := add(r.steady(ctx, "mint", mint(e.base+mintPath), mintOK, nil)); err != nil {
		return nil, err
	}
	if err := add(r.steady(ctx, "mint-floor", mint(r.floor+"/floor/mint"), ok200, r.floorAllocs(mint(r.floor+"/floor/mint")))); err != nil {
		return nil, err
	}
	if err := r.clearFloor(ctx, rep); err != nil {
		return nil, err
	}
	if err := add(r.steady(ctx, "mint-floor-durable", mint(r.floor+"/floor/mint-durable"), ok200,
		r.floorAllocs(mint(r.floor+"/floor/mint-durable")))); err != nil {
		return nil, err
	}
	if err := r.clearFloor(ctx, rep); err != nil {
		return nil, err
	}
	mintRate, mintFloorRate := rep.find("mint").ReqPerSec, rep.find("mint-floor").ReqPerSec
	if err := add(r.consume(ctx, "redeem", "service", e.base+loginPath, mintRate, mintRate, r.mintBatch, nil)); err != nil {
		return nil, err
	}
	if err := add(r.consume(ctx, "redeem-floor", "floor", r.floor+"/floor/redeem", 20*mintFloorRate, mintFloorRate, r.f.seed,
		r.redeemAllocs("/floor/redeem"))); err != nil {
		return nil, err
	}
	if err := r.clearFloor(ctx, rep); err != nil {
		return nil, err
	}
	if err := add(r.consume(ctx, "redeem-floor-durable", "floor", r.floor+"/floor/redeem-durable", 20*mintFloorRate, mintFloorRate, r.f.seed,
		r.redeemAllocs("/floor/redeem-durable"))); err != nil {
		return nil, err
	}
	if err := r.clearFloor(ctx, rep); err != nil {
		return nil, err
	}
	if err := add(r.steady(ctx, "session", get(e.base+sessionPath, r.cookie), ok200, nil)); err != nil {
		return nil, err
	}
	if err := add(r.steady(ctx, "session-floor", get(r.floor+"/floor/session", r.cookie), ok200,
		r.floorAllocs(get(r.floor+"/floor/session", r.cookie)))); err != nil {
		return nil, err
	}
	// The service's cheapest route (its middleware and an empty answer, in
	// its own process): against bare-http, what any route of the service
	// costs before its work; against it, what the session check's work does.
	if err := add(r.steady(ctx, "healthz", get(e.base+"/healthz", ""), ok200, nil)); err != nil {
		return nil, err
	}
	rep.ratios()
	rep.Profiles = r.profiles
	return rep, nil
}

func (r *runner) mintRequest(ctx context.Context, url string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(mintBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", r.bearer)
	return req
}

func loginBody(token string) []byte { return []byte(`{"token":"` + token + `"}`) }

func loginRequest(ctx context.Context, url string, body []byte) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return req
}

// mintOne runs the Forest action once and returns the token of its webhook
// answer.
func (r *runner) mintOne(ctx context.Context) (string, error) {
	res, err := r.l.client.Do(r.mintRequest(ctx, r.e.base+mintPath))
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	var answer struct {
		Webhook struct {
			Body struct {
				Token string `json:"token"`
			} `json:"body"`
		} `json:"webhook"`
	}
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &answer) != nil || answer.Webhook.Body.Token == "" {
		return "", fmt.Errorf("mint: POST %s answered %d %s (expected 200 with webhook.body.token: webhook delivery, a policy that lets admin 1001 of team Support impersonate users 42 without a rate limit)",
			mintPath, res.StatusCode, clip(body))
	}
	return answer.Webhook.Body.Token, nil
}

// redeemOne logs in with token and returns the session cookie, after
// checking that the session endpoint accepts it.
func (r *runner) redeemOne(ctx context.Context, token string) (string, error) {
	res, err := r.l.client.Do(loginRequest(ctx, r.e.base+loginPath, loginBody(token)))
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || len(res.Cookies()) == 0 {
		return "", fmt.Errorf("login: POST %s answered %d %s (expected 200 and a session cookie)", loginPath, res.StatusCode, clip(body))
	}
	c := res.Cookies()[0]
	cookie := c.Name + "=" + c.Value
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.e.base+sessionPath, nil)
	req.Header.Set("Cookie", cookie)
	res, err = r.l.client.Do(req)
	if err != nil {
		return "", err
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("session: GET %s answered %d %s with the cookie login set", sessionPath, res.StatusCode, clip(body))
	}
	return cookie, nil
}

// mintBatch mints n tokens through the service, untimed, for the redeem
// scenario, and returns their login bodies.
func (r *runner) mintBatch(ctx context.Context, n int) ([][]byte, error) {
	bodies := make([][]byte, n)
	err := r.l.each(ctx, n, func(ctx context.Context, i int) error {
		tok, err := r.mintOne(ctx)
		bodies[i] = loginBody(tok)
		return err
	})
	return bodies, err
}

// allocWindow measures the server's allocations around the timed phases
// of a scenario and returns them per request at the end.
type allocWindow interface {
	begin(ctx context.Context)
	end(ctx context.Context, requests int64)
	perRequest(ctx context.Context) (*float64, string, error)
}

// serviceAllocs reads go_memstats_mallocs_total from the service's
// /metrics before and after each timed phase.
type serviceAllocs struct {
	r        *runner
	before   float64
	mallocs  float64
	requests int64
	failed   bool
}

func (s *serviceAllocs) begin(ctx context.Context) {
	v, err := s.r.scrape(ctx)
	s.before, s.failed = v, s.failed || err != nil
}

func (s *serviceAllocs) end(ctx context.Context, requests int64) {
	v, err := s.r.scrape(ctx)
	s.failed = s.failed || err != nil
	s.mallocs += max(0, v-s.before-s.r.scrapeCost)
	s.requests += requests
}

func (s *serviceAllocs) perRequest(context.Context) (*float64, string, error) {
	if !s.r.metricsOK || s.failed || s.requests == 0 {
		return nil, "not measurable: the service's /metrics has no go_memstats_mallocs_total", nil
	}
	v := s.mallocs / float64(s.requests)
	return &v, "service /metrics go_memstats_mallocs_total over the timed phases, less one scrape", nil
}

// floorAllocs measures a floor's allocations after its timed phases, with
// next's request repeated.
func (r *runner) floorAllocs(next nextFunc) allocWindow {
	return &floorAllocs{r: r, next: next}
}

// redeemAllocs measures a redeem floor's (at path) allocations after its
// timed phases, with single-use tokens seeded for them.
func (r *runner) redeemAllocs(path string) allocWindow {
	return &floorAllocs{r: r, prepare: r.f.seed, path: path}
}

type floorAllocs struct {
	r       *runner
	prepare func(context.Context, int) ([][]byte, error)
	path    string // with prepare: the redeem floor's path
	next    nextFunc
}

func (*floorAllocs) begin(context.Context)      {}
func (*floorAllocs) end(context.Context, int64) {}

func (f *floorAllocs) perRequest(ctx context.Context) (*float64, string, error) {
	n := calibration + calibrationWarm
	reqs := make([][]byte, n)
	if f.prepare != nil {
		bodies, err := f.prepare(ctx, n)
		if err != nil {
			return nil, "", err
		}
		for i, b := range bodies {
			reqs[i] = rawRequest(loginRequest(ctx, f.r.floor+f.path, b))
		}
	} else {
		req, _ := f.next(ctx, 0)
		raw := rawRequest(req)
		for i := range reqs {
			reqs[i] = raw
		}
	}
	v, err := allocsPerRequest(strings.TrimPrefix(f.r.floor, "http://"), reqs)
	if err != nil {
		return nil, "", fmt.Errorf("measuring the floor's allocations: %w", err)
	}
	return &v, fmt.Sprintf("runtime.MemStats over %d sequential requests from an allocation-free client", calibration), nil
}

// steady runs a scenario whose requests can repeat for o.duration.
func (r *runner) steady(ctx context.Context, name string, next nextFunc, check checkFunc, w allocWindow) (result, error) {
	kind := "floor"
	if w == nil {
		kind, w = "service", &serviceAllocs{r: r}
	}
	fmt.Fprintf(r.progress, "loadtest: %s for %s\n", name, r.o.duration)
	t := &tally{}
	runtime.GC()
	w.begin(ctx)
	if err := r.profileStart(ctx, kind); err != nil {
		return result{}, err
	}
	c0 := r.cpuNow(ctx, kind)
	n, _ := r.l.phase(ctx, r.o.duration, next, check, t)
	t.cpu.add(r.cpuNow(ctx, kind), c0)
	if err := r.profileStop(ctx, name, kind); err != nil {
		return result{}, err
	}
	w.end(ctx, n)
	return r.result(ctx, name, kind, t, w)
}

// consume runs a scenario whose requests each use up one prepared item (a
// minted token, a seeded key) for o.duration in all. Items are prepared in
// batches outside the timed phases, each sized from the rates seen so far
// so that it is prepared and used well within the tokens' lifetime.
func (r *runner) consume(ctx context.Context, name, kind, url string, prepRate, useRate float64,
	prepare func(context.Context, int) ([][]byte, error), w allocWindow) (result, error) {
	if w == nil {
		w = &serviceAllocs{r: r}
	}
	fmt.Fprintf(r.progress, "loadtest: %s for %s (single-use tokens prepared in batches, untimed)\n", name, r.o.duration)
	t := &tally{}
	for remaining := r.o.duration; remaining > 0 && t.requests < r.l.maxRequests; {
		n := batchSize(remaining, prepRate, useRate, r.l.concurrency)
		start := time.Now()
		bodies, err := prepare(ctx, n)
		if err != nil {
			return result{}, fmt.Errorf("%s: preparing %d tokens: %w", name, n, err)
		}
		prepRate = float64(n) / time.Since(start).Seconds()
		runtime.GC()
		w.begin(ctx)
		if err := r.profileStart(ctx, kind); err != nil {
			return result{}, err
		}
		c0 := r.cpuNow(ctx, kind)
		done, elapsed := r.l.phase(ctx, remaining, func(ctx context.Context, i int64) (*http.Request, bool) {
			if i >= int64(len(bodies)) {
				return nil, false
			}
			return loginRequest(ctx, url, bodies[i]), true
		}, ok200, t)
		t.cpu.add(r.cpuNow(ctx, kind), c0)
		if err := r.profileStop(ctx, name, kind); err != nil {
			return result{}, err
		}
		w.end(ctx, done)
		if err := ctx.Err(); err != nil {
			return result{}, err
		}
		remaining -= elapsed
		if done > 0 {
			useRate = float64(done) / elapsed.Seconds()
		}
	}
	return r.result(ctx, name, kind, t, w)
}

// batchSize is enough items for the time left, with a margin, but no more
// than can be prepared and used within batchBudget.
func batchSize(remaining time.Duration, prepRate, useRate float64, concurrency int) int {
	prepRate, useRate = max(prepRate, 1), max(useRate, 1)
	want := useRate*remaining.Seconds()*1.2 + float64(4*concurrency)
	fits := batchBudget.Seconds() / (1/prepRate + 1/useRate)
	return max(concurrency, int(min(want, fits, maxBatch)))
}

func (r *runner) result(ctx context.Context, name, kind string, t *tally, w allocWindow) (result, error) {
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	res := result{Name: name, Kind: kind, Requests: t.requests, Errors: t.errors, Seconds: t.elapsed.Seconds(),
		P50Ms: ms(t.hist.quantile(0.50)), P99Ms: ms(t.hist.quantile(0.99)), FirstError: t.firstErr}
	if t.elapsed > 0 {
		res.ReqPerSec = float64(t.requests-t.errors) / t.elapsed.Seconds()
	}
	var err error
	res.CPU = t.cpu.perRequest(t.requests - t.errors)
	res.Scripts = t.cpu.scriptsPerRequest(t.requests - t.errors)
	if res.AllocsPerRequest, res.AllocsSource, err = w.perRequest(ctx); err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// measureScrape measures what one /metrics scrape allocates in the
// service, to take it out of each window; false when /metrics does not
// give go_memstats_mallocs_total.
func (r *runner) measureScrape(ctx context.Context) bool {
	a, err := r.scrape(ctx)
	if err != nil {
		return false
	}
	b, err := r.scrape(ctx)
	if err != nil {
		return false
	}
	r.scrapeCost = max(0, b-a)
	return true
}

func (r *runner) scrape(ctx context.Context) (float64, error) {
	return r.scrapeMetric(ctx, "go_memstats_mallocs_total")
}

// scrapeMetric reads one unlabelled metric from the service's /metrics.
func (r *runner) scrapeMetric(ctx context.Context, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.e.base+"/metrics", nil)
	res, err := r.l.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics answered %d", res.StatusCode)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("/metrics has no " + name)
}

// cpuTime is the CPU time (user and system) the processes spent over a
// scenario's timed phases: the service (its process_cpu_seconds_total, in
// service scenarios), Redis (INFO cpu, when the floors' Redis is the
// service's) and this process (getrusage: the load generator, and in floor
// scenarios the floors' handlers too). Where the CPUs are shared, a
// scenario's throughput is its CPU cost per request: these say whose.
type cpuTime struct {
	service, redis, self    float64 // seconds
	serviceOK, redisOK, set bool
	// scripts: INFO commandstats of the script commands, read where the
	// scenario's Redis is the one read (as redis).
	scripts   map[string]cmdStat
	scriptsOK bool
}

// cmdStat is one command's INFO commandstats counters.
type cmdStat struct{ calls, usec int64 }

// scriptCommands are the commands that run scripts (go-redis's Script.Run
// sends EVALSHA, and EVAL once per script).
var scriptCommands = []string{"evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"}

// commandStats reads INFO commandstats' counters of the script commands.
func commandStats(ctx context.Context, rdb *redis.Client) (map[string]cmdStat, bool) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, false
	}
	out := map[string]cmdStat{}
	for line := range strings.SplitSeq(info, "\n") {
		name, fields, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd || !slices.Contains(scriptCommands, name) {
			continue
		}
		var c cmdStat
		for kv := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseInt(v, 10, 64)
			switch {
			case k == "calls" && err == nil:
				c.calls = n
			case k == "usec" && err == nil:
				c.usec = n
			}
		}
		out[name] = c
	}
	return out, true
}

// add adds the time between two readings.
func (c *cpuTime) add(now, before cpuTime) {
	if !c.set {
		c.serviceOK, c.redisOK, c.set = true, true, true
	}
	c.serviceOK = c.serviceOK && now.serviceOK && before.serviceOK
	c.redisOK = c.redisOK && now.redisOK && before.redisOK
	c.service += now.service - before.service
	c.redis += now.redis - before.redis
	c.self += now.self - before.self
	if c.scripts == nil {
		c.scripts, c.scriptsOK = map[string]cmdStat{}, true
	}
	c.scriptsOK = c.scriptsOK && now.scriptsOK && before.scriptsOK
	for name, n := range now.scripts {
		b := before.scripts[name]
		d := c.scripts[name]
		d.calls += n.calls - b.calls
		d.usec += n.usec - b.usec
		c.scripts[name] = d
	}
}

// scriptsPerRequest is each script command's calls over the timed phases,
// per successful request and in Redis time per call; nil when unknown.
func (c *cpuTime) scriptsPerRequest(n int64) []scriptCalls {
	if !c.set || !c.scriptsOK || n <= 0 {
		return nil
	}
	var out []scriptCalls
	for _, name := range scriptCommands {
		d := c.scripts[name]
		if d.calls <= 0 {
			continue
		}
		out = append(out, scriptCalls{Command: name, Calls: d.calls, CallsPerRequest: float64(d.calls) / float64(n),
			UsecPerCall: float64(d.usec) / float64(d.calls)})
	}
	return out
}

func (c *cpuTime) perRequest(n int64) cpuPerRequest {
	var out cpuPerRequest
	if !c.set || n <= 0 {
		return out
	}
	us := func(s float64) *float64 { v := max(0, s) * 1e6 / float64(n); return &v }
	if c.serviceOK {
		out.Service = us(c.service)
	}
	if c.redisOK {
		out.Redis = us(c.redis)
	}
	out.Loadtest = us(c.self)
	return out
}

// cpuNow reads the processes' CPU times so far.
func (r *runner) cpuNow(ctx context.Context, kind string) cpuTime {
	var c cpuTime
	if kind == "service" {
		v, err := r.scrapeMetric(ctx, "process_cpu_seconds_total")
		c.service, c.serviceOK = v, err == nil
	}
	if r.e.sameRedis {
		c.redis, c.redisOK = redisCPU(ctx, r.e.rdb)
	}
	// The floors run on the Redis read here; the service's scripts show
	// only when it is the service's.
	if kind == "floor" || r.e.sameRedis {
		c.scripts, c.scriptsOK = commandStats(ctx, r.e.rdb)
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	return c
}

// redisCPU is the Redis server's CPU time so far (INFO cpu).
func redisCPU(ctx context.Context, rdb *redis.Client) (float64, bool) {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, false
	}
	var sum float64
	found := 0
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, false
			}
			sum += f
			found++
		}
	}
	return sum, found == 2
}

// profileStart begins the service's CPU profile for a timed phase of a
// service scenario (--profile).
func (r *runner) profileStart(ctx context.Context, kind string) error {
	if r.e.pprofAddr == "" || kind != "service" {
		return nil
	}
	_, err := r.pprof(ctx, "/start")
	return err
}

// profileStop ends it and writes it to the --profile folder as
// <scenario>-<phase>.pprof.
func (r *runner) profileStop(ctx context.Context, name, kind string) error {
	if r.e.pprofAddr == "" || kind != "service" {
		return nil
	}
	b, err := r.pprof(ctx, "/stop")
	if err != nil {
		return err
	}
	n := 1
	for _, p := range r.profiles {
		if strings.HasPrefix(filepath.Base(p), name+"-") {
			n++
		}
	}
	path := filepath.Join(r.o.profileDir, fmt.Sprintf("%s-%d.pprof", name, n))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	r.profiles = append(r.profiles, path)
	return nil
}

func (r *runner) pprof(ctx context.Context, path string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.e.pprofAddr+path, nil)
	res, err := r.l.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("profile %s: %d %s", path, res.StatusCode, b)
	}
	return b, err
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// ---------------------------------------------------------------------------
// The report.

func (rep *report) find(name string) *result {
	for i := range rep.Scenarios {
		if rep.Scenarios[i].Name == name {
			return &rep.Scenarios[i]
		}
	}
	return nil
}

func (rep *report) ratios() {
	rep.Ratios = nil
	for _, p := range [][2]string{{"mint", "mint-floor"}, {"mint", "mint-floor-durable"}, {"redeem", "redeem-floor"},
		{"redeem", "redeem-floor-durable"}, {"session", "session-floor"}, {"session", "bare-http"},
		{"healthz", "bare-http"}, {"session", "healthz"}} {
		s, f := rep.find(p[0]), rep.find(p[1])
		if s == nil || f == nil {
			continue
		}
		rep.Ratios = append(rep.Ratios, ratio{Name: p[0] + "/" + p[1], Scenario: p[0], Floor: p[1],
			Cost: div(f.ReqPerSec, s.ReqPerSec), P50: div(s.P50Ms, f.P50Ms), P99: div(s.P99Ms, f.P99Ms)})
	}
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (rep *report) print(w io.Writer) error {
	where := "started here"
	if !rep.Managed {
		where = "given by --url"
	}
	fmt.Fprintf(w, "loadtest: %s per scenario, %d concurrent keep-alive connections, GOMAXPROCS %d on %d CPUs, %s\n",
		rep.Duration, rep.Concurrency, rep.GOMAXPROCS, rep.NumCPU, rep.GoVersion)
	fmt.Fprintf(w, "service %s (%s); floors served by this process on %s\n\n", rep.Target, where, rep.FloorRedis)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\treq/s\tp50\tp99\terrors\tallocs/req\tcpu µs/req: service\tredis\tloadtest\ttotal\t")
	for _, s := range rep.Scenarios {
		allocs := "-"
		if s.AllocsPerRequest != nil {
			allocs = fmt.Sprintf("%.0f", *s.AllocsPerRequest)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", s.Name, s.ReqPerSec, fmtMs(s.P50Ms), fmtMs(s.P99Ms), s.Errors, allocs,
			fmtUs(s.CPU.Service), fmtUs(s.CPU.Redis), fmtUs(s.CPU.Loadtest), fmtUs(s.CPU.total(s.Kind)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nRatios to the floors (cost: floor req/s ÷ req/s, the time per request relative to the floor; p50, p99: latency ÷ the floor's):")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ratio\tcost\tp50\tp99\t")
	for _, r := range rep.Ratios {
		fmt.Fprintf(tw, "%s\t%.2fx\t%.2fx\t%.2fx\t\n", r.Name, r.Cost, r.P50, r.P99)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nRedis time per script call (INFO commandstats over the timed phases: Redis's own time per call, the script's commands included):")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tcommand\tcalls\tcalls/req\tµs/call\t")
	for _, s := range rep.Scenarios {
		for _, c := range s.Scripts {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.1f\t\n", s.Name, c.Command, c.Calls, c.CallsPerRequest, c.UsecPerCall)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "The durable floors append events of %d (minted) and %d (redeemed) bytes: %s.\n",
		rep.DurableEvents.MintedBytes, rep.DurableEvents.RedeemedBytes, rep.DurableEvents.Source)
	for _, s := range rep.Scenarios {
		if s.Errors > 0 {
			fmt.Fprintf(w, "\n%s: %d errors, the first: %s\n", s.Name, s.Errors, s.FirstError)
		}
	}
	fmt.Fprintln(w, "\nallocs/req: the service's from its /metrics (go_memstats_mallocs_total over the timed phases); the floors' from this process's")
	fmt.Fprintln(w, "runtime.MemStats over sequential requests from an allocation-free raw client, so that the load generator's own are not counted.")
	fmt.Fprintln(w, "cpu µs/req: CPU time (user+system) over the timed phases per successful request: the service's process_cpu_seconds_total, Redis's")
	fmt.Fprintln(w, "INFO cpu (when it is the service's), and this process's (the load generator; in floor rows, with the floor's handler).")
	if len(rep.Profiles) > 0 {
		dir := filepath.Dir(rep.Profiles[0])
		fmt.Fprintf(w, "\nThe service's CPU profiles over the timed phases, in %s: go tool pprof -top %s %s\n",
			dir, filepath.Join(dir, "impersonator"), filepath.Join(dir, "mint-*.pprof"))
	}
	return nil
}

func fmtUs(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", *v)
}

// total is the CPU time per request of every process involved, nil when
// one of them is unknown (a floor row has no service: the floor runs here).
func (c cpuPerRequest) total(kind string) *float64 {
	if c.Redis == nil || c.Loadtest == nil || (kind == "service" && c.Service == nil) {
		return nil
	}
	t := *c.Redis + *c.Loadtest
	if c.Service != nil {
		t += *c.Service
	}
	return &t
}

func fmtMs(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%.0fµs", v*1000)
	}
	return fmt.Sprintf("%.2fms", v)
}
