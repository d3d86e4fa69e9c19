package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/impersonator/impersonator/internal/audit"
)

// shortInterval is the checkpoint interval of the instances these tests
// run for real.
const shortInterval = 100 * time.Millisecond

// instance is one running service's checkpointer and what it remembers.
type instance struct {
	mem *audit.Memory
	cp  audit.Checkpointer
	mu  sync.Mutex
	on  []bool // the alarm metric, as set at each interval
}

// startInstance opens an instance's memory (from the witness file when
// not empty) and its checkpointer.
func (w *tamperWorld) startInstance(t *testing.T, file string) *instance {
	t.Helper()
	mem, err := audit.OpenMemory(file)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{mem: mem}
	in.cp = audit.Checkpointer{Log: discard(), Signer: w.keys, Interval: shortInterval, Memory: mem, Alarm: func(on bool) {
		in.mu.Lock()
		in.on = append(in.on, on)
		in.mu.Unlock()
	}}
	return in
}

// intervals runs the checkpointer for real until n more intervals have
// passed, and returns the alarm as set at each.
func (in *instance) intervals(t *testing.T, l *audit.Log, n int) []bool {
	t.Helper()
	in.mu.Lock()
	from := len(in.on)
	in.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); in.cp.Run(ctx, l) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		in.mu.Lock()
		got := len(in.on) - from
		in.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.on)-from < n {
		t.Fatalf("the checkpointer ran %d intervals in 10s, want %d", len(in.on)-from, n)
	}
	return append([]bool(nil), in.on[from:from+n]...)
}

// rewriteAll is the attack of issue 20: delete the checkpoint stream, the
// seal and the audit stream, then append every event again but the one at
// skip, with new ids (`*`). With forgeTimes, each event's time is set to
// its new id's, as a careful attacker would. It returns the new ids.
func (w *tamperWorld) rewriteAll(t *testing.T, skip int, forgeTimes bool) []string {
	t.Helper()
	ctx := context.Background()
	es := w.entries(t)
	if err := w.rdb.Del(ctx, w.cps, strings.TrimSuffix(w.cps, ":checkpoints")+":sealed", w.stream).Err(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, e := range es {
		if i == skip {
			continue
		}
		id, raw := "*", e.e
		if forgeTimes {
			ms := time.Now().UnixMilli()
			var m map[string]any
			if err := json.Unmarshal([]byte(raw), &m); err != nil {
				t.Fatal(err)
			}
			m["time"] = time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
			b, _ := json.Marshal(m)
			id, raw = fmt.Sprintf("%d-*", ms), string(b)
		}
		got, err := w.rdb.XAdd(ctx, &redis.XAddArgs{Stream: w.stream, ID: id, Values: []string{"e", raw}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got)
	}
	return ids
}

func readWitnessFile(t *testing.T, file string) []audit.Summary {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wit, err := audit.ReadWitness(f)
	if err != nil {
		t.Fatal(err)
	}
	return wit
}

// rewriteRows are TestTamperEvidence's rows of the full rewrite (README's
// tamper table), on a real redis-server, against an instance that saw the
// chain before it; each is checked at once and again after the
// checkpointer runs three more intervals for real.
func rewriteRows(t *testing.T) {
	for _, tc := range []struct {
		name       string
		forgeTimes bool // the attacker also sets each time to its new id's
		restart    bool // the instance restarts while the attacker rewrites
		cut        bool // instead: delete the newest checkpoint, its events and the seal
	}{
		{"rewrite: delete checkpoints, seal and stream, append all but one again with * ids", false, false, false},
		{"rewrite with every time forged to its new id", true, false, false},
		{"rewrite during a restart, with a witness file", true, true, false},
		{"delete the newest checkpoint, its events and the seal", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			w := newTamperWorld(t)
			file := filepath.Join(t.TempDir(), "witness.jsonl")
			in := w.startInstance(t, file)
			// The instance covers the tail with checkpoint 3 and remembers
			// it, in memory and in its witness file.
			if on := in.intervals(t, w.log, 1); on[0] {
				t.Fatalf("alarm before any tampering")
			}
			if s, ok := in.mem.Seen(); !ok || s.Seq != 3 {
				t.Fatalf("the instance remembers %+v, %v; want checkpoint 3", s, ok)
			}
			if wit := readWitnessFile(t, file); len(wit) != 2 || wit[0].Seq != 2 || wit[1].Seq != 3 {
				t.Fatalf("witness file = %+v, want checkpoints 2 (read at start) and 3 (written)", wit)
			}
			var newIDs []string
			missing := "checkpoint seq 2" // the first the witness file has that Redis lacks
			if tc.cut {
				missing = "checkpoint seq 3"
				w.deleteCheckpoint(t, 2)
				for _, id := range w.ids[8:] {
					w.rdb.XDel(ctx, w.stream, id)
				}
				w.rdb.Del(ctx, strings.TrimSuffix(w.cps, ":checkpoints")+":sealed")
			} else {
				newIDs = w.rewriteAll(t, 5, tc.forgeTimes)
			}
			if tc.restart {
				// A restarted instance without the file has nothing to
				// compare with: it sees nothing wrong, and even signs.
				blank := w.startInstance(t, "")
				if on := blank.intervals(t, w.log, 1); on[0] {
					t.Errorf("a restarted instance without the witness file: alarm %v", on[0])
				}
				in = w.startInstance(t, file)
			}
			check := func(when string) {
				t.Helper()
				// Redis alone: only the times give the rewrite away, and
				// only as a flag.
				r := w.verify(t, audit.VerifyOptions{})
				if r.Tampered || r.Note != audit.NoWitnessNote {
					t.Errorf("%s: Redis alone = %+v; want no verdict, and the note that a witness is needed", when, r)
				}
				if tc.forgeTimes && r.TimeNotID != 0 {
					t.Errorf("%s: Redis alone = %+v; want forged times to pass", when, r)
				}
				if !tc.forgeTimes && (r.TimeNotID != 9 || r.FirstTimeNotID != newIDs[0] || !strings.Contains(r.TimeProblem, "is not the time of its stream id")) {
					t.Errorf("%s: Redis alone = %+v; want the 9 re-added events flagged from %s, their times not their ids'", when, r, newIDs[0])
				}
				// With the witness file.
				r = w.verify(t, audit.VerifyOptions{Witness: readWitnessFile(t, file)})
				if !r.Tampered || !strings.Contains(r.Problem, missing) || !strings.Contains(r.Problem, "not in Redis") {
					t.Errorf("%s: with the witness file = %+v; want %s missing from Redis", when, r, missing)
				}
				// The instance's alarm names what is missing.
				if a := in.mem.Alarm(); !strings.Contains(a, "checkpoint seq 3") || !strings.Contains(a, "no longer in Redis's chain") {
					t.Errorf("%s: the instance's alarm = %q; want checkpoint 3 gone", when, a)
				}
			}
			if on := in.intervals(t, w.log, 1); !on[0] {
				t.Errorf("the instance's first interval after the rewrite: no alarm")
			}
			check("at once")
			for i, on := range in.intervals(t, w.log, 3) {
				if !on {
					t.Errorf("interval %d after the rewrite: the alarm went down by itself", i+1)
				}
			}
			check("after three intervals")
			if n, _ := w.rdb.Exists(ctx, w.cps).Result(); n != 0 && !tc.restart && !tc.cut {
				t.Errorf("the alarmed instance signed the rewritten history")
			}
		})
	}
}

// TestAlarmIsStickyUntilAccept: once raised, the alarm stays up across
// intervals, whatever the attacker appends (an audit.accepted event of
// their own, covered by an ordinary checkpoint of an instance that saw
// nothing), and only `audit accept` lowers it; the witness file records
// the accept, and verification with it passes afterwards.
func TestAlarmIsStickyUntilAccept(t *testing.T) {
	ctx := context.Background()
	w := newTamperWorld(t)
	file := filepath.Join(t.TempDir(), "witness.jsonl")
	in := w.startInstance(t, file)
	in.intervals(t, w.log, 1)
	w.rewriteAll(t, 5, true)
	if on := in.intervals(t, w.log, 1); !on[0] {
		t.Fatal("no alarm after the rewrite")
	}
	// The attacker appends a forged accept; a fresh instance covers it.
	forged := ev(audit.AuditAccepted, operator, "", "")
	forged.Reason = "nothing to see"
	appendEv(t, w.st, forged)
	fresh := w.startInstance(t, "")
	if on := fresh.intervals(t, w.log, 1); on[0] {
		t.Fatalf("the fresh instance raised an alarm: %s", fresh.mem.Alarm())
	}
	for i, on := range in.intervals(t, w.log, 3) {
		if !on {
			t.Errorf("interval %d after the forged accept: the alarm went down", i+1)
		}
	}
	// A restart with the witness file keeps it up too.
	in = w.startInstance(t, file)
	if in.mem.Alarm() == "" {
		t.Errorf("a restarted instance forgot its alarm")
	}
	if on := in.intervals(t, w.log, 1); !on[0] {
		t.Errorf("the restarted instance lowered its alarm")
	}

	sums, err := w.log.Accept(ctx, w.keys, "INC-7: restored from backup after the incident", operator)
	if err != nil || len(sums) == 0 || sums[len(sums)-1].Accepted == "" {
		t.Fatalf("Accept = %+v, %v", sums, err)
	}
	for i, on := range in.intervals(t, w.log, 2) {
		if on {
			t.Errorf("interval %d after audit accept: the alarm is still up: %s", i+1, in.mem.Alarm())
		}
	}
	// The accept is an event, and the chain goes on from it.
	page, err := w.log.Query(ctx, audit.Filter{Type: audit.AuditAccepted}, 10, "")
	if err != nil || len(page.Events) != 2 || page.Events[0].Reason != "INC-7: restored from backup after the incident" {
		t.Errorf("audit.accepted events = %+v, %v; want the operator's, newest, and the forged one", page.Events, err)
	}
	appendEv(t, w.st, ev(audit.Minted, ada, "users", "77"))
	if on := in.intervals(t, w.log, 1); on[0] {
		t.Errorf("alarm after the next checkpoint: %s", in.mem.Alarm())
	}
	r := w.verify(t, audit.VerifyOptions{Witness: readWitnessFile(t, file)})
	if !r.OK || len(r.Accepted) == 0 || r.Witnessed == 0 {
		t.Errorf("verify with the witness file after the accept = %+v; want ok, the accept listed, witnessed checkpoints", r)
	}
	if s, _ := in.mem.Seen(); s.Seq != int64(r.Checkpoints) {
		t.Errorf("the instance remembers seq %d, the chain has %d checkpoints", s.Seq, r.Checkpoints)
	}
}

// TestMemoryAndRetention: retention removing the checkpoint an instance
// remembers is no alarm when retention is on, that checkpoint is older than
// it and the chain's first checkpoint comes after it; the same cut is an
// alarm for an instance without retention.
func TestMemoryAndRetention(t *testing.T) {
	ctx := context.Background()
	for _, retention := range []time.Duration{time.Hour, 0} {
		t.Run(fmt.Sprint("retention ", retention), func(t *testing.T) {
			w := newTamperWorld(t)
			in := w.startInstance(t, "")
			in.intervals(t, w.log, 1) // checkpoint 3, remembered
			appendEv(t, w.st, ev(audit.Minted, ada, "users", "99"))
			if _, err := w.log.CatchUp(ctx, w.keys, 0); err != nil { // checkpoint 4, by another instance
				t.Fatal(err)
			}
			// Two hours later, retention (1h) makes checkpoint 4 the anchor.
			later := audit.NewLog(w.st, func() time.Time { return time.Now().Add(2 * time.Hour) })
			if n, err := later.Trim(ctx, time.Hour); err != nil || n != 11 {
				t.Fatalf("Trim = %d, %v; want the 11 events through checkpoint 4", n, err)
			}
			in.cp.Retention = retention
			in.cp.Once(ctx, later)
			a := in.mem.Alarm()
			if retention > 0 && a != "" {
				t.Errorf("retention trimmed the remembered checkpoint: alarm %q", a)
			}
			if retention == 0 && !strings.Contains(a, "checkpoint seq 3") {
				s, _ := in.mem.Seen()
				cps, _, _ := later.CheckpointsAfter(ctx, "", 10)
				t.Errorf("without retention, the remembered checkpoint gone: alarm %q, want it named; seen %+v; chain %+v", a, s, cps)
			}
			if s, _ := in.mem.Seen(); retention > 0 && s.Seq != 4 {
				t.Errorf("after retention the instance remembers seq %d, want the anchor 4", s.Seq)
			}
		})
	}
}
