package audit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

// The query benchmarks run on a real redis-server holding a log of
// AUDIT_BENCH_EVENTS events (default 100,000), written through the
// production path (audit.Encoder, store.Append) by many goroutines, with
// tools/auditbench's shape scaled down: about 50 events per user, so that
// users:42 has a few dozen, 200 admins (five busy ones), a mix of types.
// Each benchmark has its own server; the log is written once per test
// binary, and the other benchmarks get an exact copy (DUMP/RESTORE of its
// keys, stream ids included) instead of writing it again.
//
// Each benchmark has a floor (tools/benchratio): one store read of as
// many events as the query returns, in one XREVRANGE round trip from the
// same place, undecoded: what returning those events costs if they lay
// side by side in the stream.

const benchQuerySubject = "users:42"

type benchAuditLog struct {
	st           *store.Store
	log          *audit.Log
	since, until time.Time
}

// benchAuditDump is the first log written, as DUMP payloads of its keys.
var benchAuditDump struct {
	sync.Mutex
	prefix string
	keys   []string
	vals   []string
}

func benchAuditEvents(b *testing.B) int {
	n := 100_000
	if s := os.Getenv("AUDIT_BENCH_EVENTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1000 {
			b.Fatalf("AUDIT_BENCH_EVENTS=%q: want a number of events, at least 1000", s)
		}
		n = v
	}
	return n
}

// benchLog returns a log of AUDIT_BENCH_EVENTS events on a redis-server of
// its own, its 1-minute window ending mid-log.
func benchLog(b *testing.B) *benchAuditLog {
	b.Helper()
	srv := redistest.StartServer(b)
	rdb := srv.Client(b)
	ctx := context.Background()
	d := &benchAuditDump
	d.Lock()
	defer d.Unlock()
	if d.prefix == "" {
		prefix := redistest.Prefix()
		benchAuditLoad(b, srv.URL(), prefix, benchAuditEvents(b))
		var cursor uint64
		for {
			keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
			if err != nil {
				b.Fatal(err)
			}
			d.keys = append(d.keys, keys...)
			if cursor = next; cursor == 0 {
				break
			}
		}
		pipe := rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(d.keys))
		for i, k := range d.keys {
			cmds[i] = pipe.Dump(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		for _, c := range cmds {
			d.vals = append(d.vals, c.Val())
		}
		d.prefix = prefix
	} else {
		pipe := rdb.Pipeline()
		for i, k := range d.keys {
			pipe.Restore(ctx, k, 0, d.vals[i])
			if pipe.Len() == 1000 || i == len(d.keys)-1 {
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	st, err := store.Open(srv.URL(), store.Options{Prefix: d.prefix})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	l := &benchAuditLog{st: st, log: audit.NewLog(st, time.Now)}
	first, err := st.Events(ctx, "-", "+", 1)
	if err != nil {
		b.Fatal(err)
	}
	last, err := st.EventsBefore(ctx, "+", "-", 1)
	if err != nil {
		b.Fatal(err)
	}
	if len(first) == 0 || len(last) == 0 {
		b.Fatal("the benchmark log is empty")
	}
	mid := (benchStreamMS(first[0].ID) + benchStreamMS(last[0].ID)) / 2
	l.until = time.UnixMilli(mid)
	l.since = l.until.Add(-time.Minute)
	return l
}

func benchStreamMS(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return n
}

// benchAuditLoad appends n events under prefix through store.Append.
func benchAuditLoad(b *testing.B, url, prefix string, n int) {
	b.Helper()
	const workers = 32
	st, err := store.Open(url+"?pool_size="+strconv.Itoa(workers), store.Options{Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	users := max(50, n/50)
	ctx := context.Background()
	start := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for next.Add(1) <= int64(n) && failed.Load() == 0 {
				enc, err := audit.Encoder{}.Encode(benchAuditEvent(r, users))
				if err == nil {
					_, err = st.Append(ctx, enc)
				}
				if err != nil && failed.Add(1) == 1 {
					b.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		b.FailNow()
	}
	b.Logf("wrote %d audit events in %.1fs (%.0f/s)", n, time.Since(start).Seconds(), float64(n)/time.Since(start).Seconds())
}

func benchAdmin(n int) audit.Actor {
	return audit.Actor{ID: strconv.Itoa(1000 + n), Email: fmt.Sprintf("admin%d@example.com", n), Team: "Support", Role: "Support agent"}
}

func benchAuditEvent(r *rand.Rand, users int) audit.Event {
	types := []audit.Type{audit.Minted, audit.Minted, audit.Minted, audit.Redeemed, audit.Redeemed, audit.Redeemed, audit.Ended, audit.Ended, audit.Denied, audit.Rejected}
	admin := 1 + r.IntN(200)
	if r.IntN(100) < 30 {
		admin = 1 + r.IntN(5)
	}
	subj := audit.Subject{Collection: "users", ID: strconv.Itoa(1 + r.IntN(users))}
	switch p := r.IntN(100); {
	case p < 5:
		subj.ID = strconv.Itoa(1 + r.IntN(5))
	case p < 15:
		subj = audit.Subject{Collection: "companies", ID: strconv.Itoa(1 + r.IntN(max(1, users/10)))}
	}
	e := audit.Event{
		Type: types[r.IntN(len(types))], Actor: benchAdmin(admin), Subject: subj,
		Reason:    fmt.Sprintf("ticket %d: customer cannot see their invoices", 10000+r.IntN(90000)),
		TokenID:   fmt.Sprintf("%032x", r.Uint64()),
		IP:        fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), 1+r.IntN(254)),
		UserAgent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		RequestID: fmt.Sprintf("%016x", r.Uint64()),
	}
	if e.Type == audit.Minted && r.IntN(20) == 0 {
		req := benchAdmin(1 + r.IntN(200))
		e.Requester = &req
	}
	return e
}

func (l *benchAuditLog) filter(name string) audit.Filter {
	switch name {
	case "subject":
		return audit.Filter{Subject: benchQuerySubject}
	case "actor":
		return audit.Filter{Actor: benchAdmin(100).ID}
	}
	return audit.Filter{Since: l.since, Until: l.until}
}

func benchQuery(b *testing.B, name string) {
	l := benchLog(b)
	f := l.filter(name)
	ctx := context.Background()
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		p, err := l.log.Query(ctx, f, 100, "")
		if err != nil {
			b.Fatal(err)
		}
		n = len(p.Events)
	}
	if n == 0 {
		b.Fatal("the query found nothing")
	}
	b.ReportMetric(float64(n), "events/op")
}

// benchFloor reads, in one XREVRANGE, as many events as the query returns,
// from where the query starts reading, without decoding them.
func benchFloor(b *testing.B, name string) {
	l := benchLog(b)
	ctx := context.Background()
	p, err := l.log.Query(ctx, l.filter(name), 100, "")
	if err != nil {
		b.Fatal(err)
	}
	n := int64(len(p.Events))
	if n == 0 {
		b.Fatal("the query found nothing")
	}
	end, start := "+", "-"
	if name == "window" {
		end, start = "("+strconv.FormatInt(l.until.UnixMilli(), 10)+"-0", strconv.FormatInt(l.since.UnixMilli(), 10)+"-0"
	}
	b.ReportAllocs()
	for b.Loop() {
		recs, err := l.st.EventsBefore(ctx, end, start, n)
		if err != nil || int64(len(recs)) != n {
			b.Fatal(len(recs), err)
		}
	}
	b.ReportMetric(float64(n), "events/op")
}

// BenchmarkQuerySubject: the newest events of users:42 (a few dozen), read
// through its index.
func BenchmarkQuerySubject(b *testing.B)      { benchQuery(b, "subject") }
func BenchmarkFloorQuerySubject(b *testing.B) { benchFloor(b, "subject") }

// BenchmarkQueryActor: the newest 100 events of an admin (about 500 in
// all), read through its index.
func BenchmarkQueryActor(b *testing.B)      { benchQuery(b, "actor") }
func BenchmarkFloorQueryActor(b *testing.B) { benchFloor(b, "actor") }

// BenchmarkQueryWindow: the newest 100 events of the minute that ends
// mid-log (since/until: a stream range).
func BenchmarkQueryWindow(b *testing.B)      { benchQuery(b, "window") }
func BenchmarkFloorQueryWindow(b *testing.B) { benchFloor(b, "window") }
