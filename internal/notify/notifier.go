package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/store"
)

// Store is what the Notifier needs of the store (store/notify.go).
type Store interface {
	NotifyGroup(ctx context.Context) error
	NotifyRead(ctx context.Context, consumer string, count int64, block time.Duration) ([]audit.Record, error)
	NotifyClaim(ctx context.Context, consumer string, minIdle time.Duration, start string, count int64) ([]audit.Record, string, error)
	NotifyKeep(ctx context.Context, consumer string, ids []string) ([]string, error)
	NotifyStates(ctx context.Context, streamID string) (map[string]store.NotifyState, error)
	NotifyRetry(ctx context.Context, streamID, target string, st store.NotifyState, ttl time.Duration) error
	NotifyDone(ctx context.Context, streamID, target string, targets []string, dead *store.DeadLetter, ttl time.Duration) (bool, error)
	NotifyAck(ctx context.Context, ids ...string) error
	NotifyLag(ctx context.Context, now time.Time) (time.Duration, error)
	NotifyRelease(ctx context.Context, consumer string, ids []string, idle time.Duration) error
	NotifyLeave(ctx context.Context, consumer string) error
	NotifyPrune(ctx context.Context, idle time.Duration, keep string) (int, error)
}

var _ Store = (*store.Store)(nil)

// DefaultSchedule is the Standard Webhooks retry schedule: the wait before
// each retry after a failed attempt (the first attempt is immediate), so
// 8 attempts over about 27.6 hours. Each wait is shortened by up to 20% at
// random (jitter), so the first retry comes within 5 s.
var DefaultSchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// Defaults of Options.
const (
	DefaultMinIdle = time.Minute
	DefaultPoll    = time.Second
	DefaultWorkers = 4
	DefaultMaxHeld = 1000
)

// Options configure a Notifier.
type Options struct {
	Config Config // required: at least one URL
	Store  Store  // required
	// Client sends the deliveries. Default NewClient().
	Client *http.Client
	// Metrics counts deliveries and reports the lag. Default: none.
	Metrics *Metrics
	// Log receives delivery failures and Redis errors. Default: none.
	Log *slog.Logger
	// Consumer is this instance's name in the consumer group. Default:
	// host/pid/random, new at every start.
	Consumer string
	// Schedule is the wait before each retry; past its last, a delivery is
	// dead-lettered. Default DefaultSchedule (tests scale it down).
	Schedule []time.Duration
	// MinIdle: a pending entry no consumer touched for this long belongs to
	// a dead instance and is claimed. A live instance touches its entries
	// every MinIdle/3. Default DefaultMinIdle.
	MinIdle time.Duration
	// Poll is how long one read of the stream waits for new events.
	// Default DefaultPoll.
	Poll time.Duration
	// Workers is how many deliveries run at once. Default DefaultWorkers.
	Workers int
	// MaxHeld bounds the events this instance holds undelivered; past it,
	// it reads no new event until one is done (the lag metric grows).
	// Default DefaultMaxHeld.
	MaxHeld int
}

// Notifier delivers the audit stream's events to the configured URLs.
type Notifier struct {
	o       Options
	targets []string // the URL ids, for the store
	ttl     time.Duration
}

// New checks o and returns a Notifier; Run starts it.
func New(o Options) (*Notifier, error) {
	if !o.Config.Enabled() {
		return nil, errors.New("notify: no URL configured")
	}
	if o.Store == nil {
		return nil, errors.New("notify: no store")
	}
	for _, t := range o.Config.Targets {
		if !t.Slack && len(o.Config.Key) == 0 {
			return nil, errors.New("notify: no signing key")
		}
	}
	if o.Client == nil {
		o.Client = NewClient()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Consumer == "" {
		host, _ := os.Hostname()
		o.Consumer = fmt.Sprintf("%s/%d/%08x", host, os.Getpid(), rand.Uint32())
	}
	if o.Schedule == nil {
		o.Schedule = DefaultSchedule
	}
	if o.MinIdle <= 0 {
		o.MinIdle = DefaultMinIdle
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.MaxHeld <= 0 {
		o.MaxHeld = DefaultMaxHeld
	}
	n := &Notifier{o: o}
	for _, t := range o.Config.Targets {
		n.targets = append(n.targets, t.ID)
	}
	// The state of a delivery lives as long as the whole schedule twice
	// after its last change: long past any retry it could still govern.
	var total time.Duration
	for _, d := range o.Schedule {
		total += d
	}
	n.ttl = max(2*total+2*o.MinIdle, time.Minute)
	return n, nil
}

// Consumer is this instance's name in the consumer group.
func (n *Notifier) Consumer() string { return n.o.Consumer }

// entry is one held event: pending with this consumer until every URL is
// final.
type entry struct {
	msg   Message
	slots []*slot // one per target, in Config.Targets order
}

type slot struct {
	target Target
	st     store.NotifyState
	busy   bool // queued or in flight
}

type job struct {
	e *entry
	s *slot
}

type result struct {
	job
	at     time.Time
	status int
	err    error
}

// loop is Run's state, owned by its goroutine.
type loop struct {
	*Notifier
	ctx     context.Context
	held    map[string]*entry
	ready   []job
	cursor  string // where the next claim scan starts
	reading bool   // a read is outstanding
	// unread: entries the reader read but the loop never took, because it
	// stopped; written by the reader as it ends, read after it ended.
	unread []audit.Record
}

// Run delivers until ctx ends, then hands the entries it still holds back
// to the group (another instance claims them on its next pass, about
// MinIdle/2; after a crash, once they are MinIdle old) and leaves the group
// if it holds nothing.
// It never stops on a Redis or receiver failure: it logs and retries.
func (n *Notifier) Run(ctx context.Context) {
	l := &loop{Notifier: n, ctx: ctx, held: map[string]*entry{}, cursor: "0-0"}
	if !l.ensureGroup() {
		return
	}
	jobs := make(chan job)
	results := make(chan result, n.o.Workers)
	var wg sync.WaitGroup
	for range n.o.Workers {
		wg.Go(func() {
			for j := range jobs {
				status, err := Send(ctx, n.o.Client, n.o.Config.Key, j.s.target, j.e.msg, time.Now())
				results <- result{job: j, at: time.Now(), status: status, err: err}
			}
		})
	}
	want := make(chan int)
	reads := make(chan []audit.Record)
	wg.Go(func() { l.reader(want, reads) })

	l.run(jobs, results, want, reads)

	close(jobs)
	go func() {
		for range results { // workers finishing after the loop stopped
		}
	}()
	wg.Wait()
	close(results)
	held := make([]string, 0, len(l.held)+len(l.unread))
	for id := range l.held {
		held = append(held, id)
	}
	for _, r := range l.unread {
		held = append(held, r.ID)
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := n.o.Store.NotifyRelease(lctx, n.o.Consumer, held, n.o.MinIdle); err != nil {
		n.o.Log.Warn("notify: cannot hand back held entries; others claim them after MinIdle", "error", err)
	}
	if err := n.o.Store.NotifyLeave(lctx, n.o.Consumer); err != nil {
		n.o.Log.Warn("notify: leave the consumer group", "error", err)
	}
}

// Prepare creates the consumer group if it does not exist yet. serve calls
// it before it accepts requests: the group starts at the stream's end, so
// an event appended before it existed would never be notified.
func (n *Notifier) Prepare(ctx context.Context) error {
	return n.o.Store.NotifyGroup(ctx)
}

// ensureGroup creates the consumer group, retrying until it can or ctx
// ends (false).
func (l *loop) ensureGroup() bool {
	wait := l.o.Poll
	for {
		err := l.o.Store.NotifyGroup(l.ctx)
		if err == nil {
			return true
		}
		if l.ctx.Err() != nil {
			return false
		}
		l.o.Log.Warn("notify: cannot create the consumer group; retrying", "error", err, "in", wait)
		if !sleep(l.ctx, wait) {
			return false
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// reader reads new events when asked how many, off the loop: a read
// blocks up to Poll.
func (l *loop) reader(want <-chan int, reads chan<- []audit.Record) {
	wait := l.o.Poll
	for {
		var k int
		select {
		case k = <-want:
		case <-l.ctx.Done():
			return
		}
		recs, err := l.o.Store.NotifyRead(l.ctx, l.o.Consumer, int64(k), l.o.Poll)
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			l.o.Log.Warn("notify: cannot read the audit stream; retrying", "error", err, "in", wait)
			if !sleep(l.ctx, wait) {
				return
			}
			wait = min(2*wait, 30*time.Second)
		} else {
			wait = l.o.Poll
		}
		select {
		case reads <- recs:
		case <-l.ctx.Done():
			l.unread = recs
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// readBatch bounds one read.
const readBatch = 100

func (l *loop) run(jobs chan<- job, results <-chan result, want chan<- int, reads <-chan []audit.Record) {
	keepEvery := max(l.o.MinIdle/3, time.Millisecond)
	claimEvery := max(l.o.MinIdle/2, time.Millisecond)
	lagEvery := min(5*time.Second, claimEvery)
	pruneEvery := 10 * l.o.MinIdle
	now := time.Now()
	nextKeep, nextClaim, nextLag, nextPrune := now.Add(keepEvery), now, now, now.Add(pruneEvery)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now = time.Now()
		if !now.Before(nextKeep) {
			l.keep()
			nextKeep = now.Add(keepEvery)
		}
		if !now.Before(nextClaim) {
			l.claim()
			nextClaim = now.Add(claimEvery)
		}
		if !now.Before(nextLag) {
			l.lag(now)
			nextLag = now.Add(lagEvery)
		}
		if !now.Before(nextPrune) {
			if _, err := l.o.Store.NotifyPrune(l.ctx, pruneEvery, l.o.Consumer); err != nil && l.ctx.Err() == nil {
				l.o.Log.Warn("notify: cannot prune the consumer group", "error", err)
			}
			nextPrune = now.Add(pruneEvery)
		}
		wake := l.queueDue(now)
		for _, t := range []time.Time{nextKeep, nextClaim, nextLag, nextPrune} {
			if t.Before(wake) {
				wake = t
			}
		}
		if !l.reading && len(l.held) < l.o.MaxHeld {
			select {
			case want <- min(readBatch, l.o.MaxHeld-len(l.held)):
				l.reading = true
			case <-l.ctx.Done():
				return
			}
		}
		var jobc chan<- job
		var next job
		if len(l.ready) > 0 {
			jobc, next = jobs, l.ready[0]
		}
		timer.Reset(max(time.Until(wake), 0))
		select {
		case <-l.ctx.Done():
			return
		case jobc <- next:
			l.ready = l.ready[1:]
		case r := <-results:
			l.finish(r)
		case recs := <-reads:
			l.reading = false
			l.adopt(recs, nil)
		case <-timer.C:
		}
	}
}

// queueDue queues every delivery that is due and returns when the next
// one will be (far ahead when none).
func (l *loop) queueDue(now time.Time) time.Time {
	wake := now.Add(time.Hour)
	queued := len(l.ready)
	for _, e := range l.held {
		for _, s := range e.slots {
			if s.busy || s.st.Done {
				continue
			}
			if !s.st.NextAt.After(now) {
				s.busy = true
				l.ready = append(l.ready, job{e, s})
			} else if s.st.NextAt.Before(wake) {
				wake = s.st.NextAt
			}
		}
	}
	// Oldest event first: with one worker, deliveries that are due
	// together go out in the stream's order.
	slices.SortStableFunc(l.ready[queued:], func(a, b job) int { return compareIDs(a.e.msg.StreamID, b.e.msg.StreamID) })
	return wake
}

// compareIDs orders stream ids ("ms-seq").
func compareIDs(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	if c := cmp.Compare(len(am), len(bm)); c != 0 {
		return c
	}
	if c := strings.Compare(am, bm); c != 0 {
		return c
	}
	if c := cmp.Compare(len(as), len(bs)); c != 0 {
		return c
	}
	return strings.Compare(as, bs)
}

// adopt takes in read or claimed entries. states, for claimed ones, is
// loaded from the store: a claim carries on the dead consumer's retries.
func (l *loop) adopt(recs []audit.Record, states map[string]map[string]store.NotifyState) {
	var skip []string
	now := time.Now()
	for _, r := range recs {
		if _, ok := l.held[r.ID]; ok {
			continue
		}
		m, ev, err := NewMessage(r.ID, []byte(r.Raw))
		if err != nil {
			l.o.Log.Warn("notify: unreadable audit entry skipped", "stream_id", r.ID, "error", err)
			skip = append(skip, r.ID)
			continue
		}
		if !l.o.Config.Selects(ev.Type) {
			skip = append(skip, r.ID)
			continue
		}
		e := &entry{msg: m}
		owed := false
		for _, t := range l.o.Config.Targets {
			st := states[r.ID][t.ID]
			if st.NextAt.IsZero() {
				st.NextAt = now
			}
			owed = owed || !st.Done
			e.slots = append(e.slots, &slot{target: t, st: st})
		}
		if !owed {
			skip = append(skip, r.ID)
			continue
		}
		l.held[r.ID] = e
	}
	if err := l.o.Store.NotifyAck(l.ctx, skip...); err != nil && l.ctx.Err() == nil {
		// They stay pending with us; a later claim takes them again.
		l.o.Log.Warn("notify: cannot acknowledge entries that need no delivery", "error", err)
	}
}

// claim takes over the entries of dead consumers, as many as there is
// room for.
func (l *loop) claim() {
	for range 10 {
		room := l.o.MaxHeld - len(l.held)
		if room <= 0 {
			return
		}
		recs, next, err := l.o.Store.NotifyClaim(l.ctx, l.o.Consumer, l.o.MinIdle, l.cursor, int64(min(room, readBatch)))
		if err != nil {
			if l.ctx.Err() == nil {
				l.o.Log.Warn("notify: cannot claim pending entries", "error", err)
			}
			return
		}
		l.cursor = next
		states := map[string]map[string]store.NotifyState{}
		for _, r := range recs {
			if _, ok := l.held[r.ID]; ok {
				continue
			}
			st, err := l.o.Store.NotifyStates(l.ctx, r.ID)
			if err != nil {
				if l.ctx.Err() == nil {
					l.o.Log.Warn("notify: cannot read a claimed entry's state", "error", err)
				}
				return // they stay pending with us: the next claim takes them again
			}
			states[r.ID] = st
		}
		if len(recs) > 0 {
			l.o.Log.Info("notify: claimed the pending entries of a stopped instance", "count", len(recs))
		}
		l.adopt(recs, states)
		if next == "0-0" {
			return
		}
	}
}

// keep touches the held entries so no other instance claims them, and
// drops those another instance took meanwhile.
func (l *loop) keep() {
	if len(l.held) == 0 {
		return
	}
	ids := make([]string, 0, len(l.held))
	for id := range l.held {
		ids = append(ids, id)
	}
	lost, err := l.o.Store.NotifyKeep(l.ctx, l.o.Consumer, ids)
	if err != nil {
		if l.ctx.Err() == nil {
			l.o.Log.Warn("notify: cannot refresh held entries", "error", err)
		}
		return
	}
	for _, id := range lost {
		delete(l.held, id)
	}
	if len(lost) > 0 {
		l.ready = slices.DeleteFunc(l.ready, func(j job) bool { return l.held[j.e.msg.StreamID] != j.e })
		l.o.Log.Warn("notify: entries were claimed by another instance", "count", len(lost))
	}
}

func (l *loop) lag(now time.Time) {
	d, err := l.o.Store.NotifyLag(l.ctx, now)
	if err != nil {
		if l.ctx.Err() == nil {
			l.o.Log.Warn("notify: cannot measure the lag", "error", err)
		}
		return
	}
	l.o.Metrics.setLag(d.Seconds())
}

// storeRetry is when an attempt whose outcome could not be recorded runs
// again.
const storeRetry = time.Second

// finish records one attempt's outcome.
func (l *loop) finish(r result) {
	if l.ctx.Err() != nil {
		return // cut short by the shutdown: not an outcome
	}
	r.s.busy = false
	if l.held[r.e.msg.StreamID] != r.e {
		return // another instance took the entry meanwhile
	}
	id := r.e.msg.StreamID
	log := l.o.Log.With("event_id", r.e.msg.ID, "stream_id", id, "url", r.s.target)
	l.o.Metrics.delivered(r.err == nil)
	var dead *store.DeadLetter
	if r.err != nil {
		r.s.st.Attempts++
		if r.s.st.Attempts <= len(l.o.Schedule) {
			r.s.st.NextAt = r.at.Add(jitter(l.o.Schedule[r.s.st.Attempts-1]))
			log.Warn("notify: delivery failed; will retry", "attempt", r.s.st.Attempts, "error", r.err, "retry_at", r.s.st.NextAt)
			if err := l.o.Store.NotifyRetry(l.ctx, id, r.s.target.ID, r.s.st, l.ttl); err != nil {
				log.Warn("notify: cannot record the retry", "error", err)
			}
			return
		}
		dead = &store.DeadLetter{EventID: r.e.msg.ID, StreamID: id, URL: r.s.target.Redacted(), Target: r.s.target.ID,
			Error: r.err.Error(), Attempts: r.s.st.Attempts}
	}
	acked, err := l.o.Store.NotifyDone(l.ctx, id, r.s.target.ID, l.targets, dead, l.ttl)
	if err != nil {
		// Not recorded: try the delivery again soon (at least once).
		log.Warn("notify: cannot record the delivery; will deliver again", "error", err)
		if dead != nil {
			r.s.st.Attempts--
		}
		r.s.st.NextAt = r.at.Add(storeRetry)
		return
	}
	r.s.st.Done = true
	if dead != nil {
		r.s.st.Dead = true
		l.o.Metrics.deadLetter()
		log.Error("notify: delivery failed for good; dead-lettered", "attempts", dead.Attempts, "error", r.err)
	}
	if acked {
		delete(l.held, id)
	}
}

// jitter shortens d by up to 20% at random, so instances that failed
// together do not retry together.
func jitter(d time.Duration) time.Duration {
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}
