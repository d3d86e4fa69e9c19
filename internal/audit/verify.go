package audit

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// SignatureVerifier checks checkpoint signatures: the service's keyset, or
// the public keys of its JWKS alone.
type SignatureVerifier interface {
	VerifySignature(kid string, msg, sig []byte) error
	// HasKey reports whether kid is known: a signature by an unknown key
	// is an operational problem (a key not loaded), never tampering.
	HasKey(kid string) bool
}

// Report is the outcome of Verify.
type Report struct {
	// OK: every check passed. Tampered: something was changed, deleted or
	// inserted. Neither: verification could not finish (an unknown key).
	OK       bool `json:"ok"`
	Tampered bool `json:"tampered"`
	// Checkpoints verified, and the sequence number verification starts at:
	// 1, or the anchor left by retention trimming.
	Checkpoints int   `json:"checkpoints"`
	FromSeq     int64 `json:"from_seq,omitempty"`
	// Events whose bytes matched a signed checkpoint.
	Verified int `json:"events_verified"`
	// Events after the newest checkpoint: not covered yet.
	Uncovered int `json:"events_not_yet_checkpointed"`
	// Witnessed checkpoints found unchanged in the chain.
	Witnessed int `json:"witnessed,omitempty"`
	// Accepted: checkpoints an operator signed over events the
	// checkpointer had refused (audit accept), with their statements.
	Accepted []Summary `json:"accepted,omitempty"`
	// The first bad event: its stream id, its event id when readable, and
	// what is wrong.
	FirstBad   string `json:"first_bad_event,omitempty"`
	FirstBadID string `json:"first_bad_event_id,omitempty"`
	Problem    string `json:"problem,omitempty"`
	// Events whose stored time is not their stream id's time, and the
	// first of them. A flag, not a verdict of tampering (events written
	// before the one-clock rule differ too): events appended again with
	// new ids keep their old times.
	TimeNotID      int    `json:"events_time_not_stream_id,omitempty"`
	FirstTimeNotID string `json:"first_time_not_stream_id,omitempty"`
	TimeProblem    string `json:"time_problem,omitempty"`
	// Alarm: the answering instance's integrity alarm (GET
	// /v1/audit/verify), raised when Redis's chain stopped holding what it
	// saw; it stays until `impersonator audit accept`.
	Alarm string `json:"integrity_alarm,omitempty"`
	// Note says what this verification could not see.
	Note string `json:"note,omitempty"`
}

// NoWitnessNote is the Report's note when no witness was given.
const NoWitnessNote = "no witness was given (--witness FILE or IMPERSONATOR_AUDIT_WITNESS): a full rewrite of the log by someone with write access to Redis cannot be detected without one"

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// MaxUncovered: events older than this that no checkpoint covers are
	// tampering (twice the checkpoint interval); 0 skips the check.
	MaxUncovered time.Duration
	// Witness: checkpoints seen outside Redis (an export or the service
	// log); Redis's chain must hold each of them unchanged.
	Witness []Summary
}

// Verify recomputes every event's hash, checks every checkpoint's signature
// and the chain between checkpoints, and names the first bad event. It
// pages through checkpoints and their events, so its memory stays flat
// whatever the log's size.
func (l *Log) Verify(ctx context.Context, keys SignatureVerifier, o VerifyOptions) (Report, error) {
	v := verifier{l: l, keys: keys, r: Report{}, pos: "-"}
	if err := v.run(ctx, o); err != nil {
		return Report{}, err
	}
	r := v.r
	r.OK = r.Problem == ""
	if !r.OK {
		r.Uncovered = 0
	}
	if len(o.Witness) == 0 {
		r.Note = NoWitnessNote
	}
	return r, nil
}

type verifier struct {
	l    *Log
	keys SignatureVerifier
	r    Report
	pos  string // the last event stream id accounted for ("-": none)
	prev *storedCheckpoint
	seen map[int64]string // digests by seq, for the witness (seq only when witnessed)
}

func (v *verifier) tamper(bad, badID, problem string) {
	if v.r.Problem == "" {
		v.r.FirstBad, v.r.FirstBadID, v.r.Problem, v.r.Tampered = bad, badID, problem, true
	}
}

func (v *verifier) run(ctx context.Context, o VerifyOptions) error {
	want := map[int64]bool{}
	for _, w := range o.Witness {
		want[w.Seq] = true
	}
	v.seen = map[int64]string{}
	start := "-"
	first := true
	for v.r.Problem == "" {
		recs, err := v.l.st.Checkpoints(ctx, start, "+", 100)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			c, err := decodeCheckpoint(rec)
			if err != nil {
				v.tamper(rec.ID, "", err.Error())
				return nil
			}
			if want[c.Seq] {
				v.seen[c.Seq] = c.Digest()
			}
			if err := v.checkpoint(ctx, c, first); err != nil {
				return err
			}
			first = false
			if v.r.Problem != "" {
				return nil
			}
		}
		if len(recs) < 100 {
			break
		}
		start = "(" + recs[len(recs)-1].ID
	}
	if v.r.Problem != "" {
		return nil
	}
	sealed, err := v.l.st.Sealed(ctx)
	if err != nil {
		return err
	}
	newest := int64(0)
	if v.prev != nil {
		newest = v.prev.Seq
	}
	if sealed > newest {
		v.tamper("", "", fmt.Sprintf("the chain ends at seq %d but seq %d was written: the newest checkpoints were deleted", newest, sealed))
		return nil
	}
	for _, w := range o.Witness {
		got, ok := v.seen[w.Seq]
		switch {
		case w.Seq < v.r.FromSeq:
			// trimmed by retention before the anchor
		case !ok:
			v.tamper(w.Last, "", fmt.Sprintf("checkpoint seq %d (covering %s..%s) is in the witness but not in Redis: the chain is shorter than what was seen", w.Seq, w.First, w.Last))
			return nil
		case got != w.Digest:
			v.tamper(w.First, "", fmt.Sprintf("checkpoint seq %d differs from the witness's: the chain was rewritten", w.Seq))
			return nil
		default:
			v.r.Witnessed++
		}
	}
	// What no checkpoint covers yet.
	oldest := ""
	err = v.l.Range(ctx, v.after(), func(e Entry) bool {
		if oldest == "" {
			oldest = e.StreamID
		}
		v.checkTime(e)
		v.r.Uncovered++
		return true
	})
	if err != nil {
		return err
	}
	if o.MaxUncovered > 0 && oldest != "" && streamTime(oldest).Before(v.l.now().Add(-o.MaxUncovered)) {
		e := v.event(ctx, oldest)
		v.tamper(oldest, e.Event.ID, fmt.Sprintf("event %s is older than %s and no checkpoint covers it: checkpoints were deleted", oldest, o.MaxUncovered))
	}
	return nil
}

// checkTime flags e when its stored time is not its stream id's.
func (v *verifier) checkTime(e Entry) {
	if timeIsID(e) {
		return
	}
	if v.r.TimeNotID == 0 {
		v.r.FirstTimeNotID, v.r.TimeProblem = e.StreamID, timeProblem(e)
	}
	v.r.TimeNotID++
}

func (v *verifier) after() string {
	if v.pos == "-" {
		return "-"
	}
	return "(" + v.pos
}

func (v *verifier) event(ctx context.Context, id string) Entry {
	recs, err := v.l.st.Events(ctx, id, id, 1)
	if err != nil || len(recs) == 0 {
		return Entry{StreamID: id}
	}
	return decodeEntry(recs[0])
}

// checkpoint verifies one checkpoint and the events it covers.
func (v *verifier) checkpoint(ctx context.Context, c storedCheckpoint, first bool) error {
	sig, _ := base64.RawURLEncoding.DecodeString(c.Sig)
	if err := v.keys.VerifySignature(c.KID, c.Body(), sig); err != nil {
		if !v.keys.HasKey(c.KID) {
			v.r.Problem = fmt.Sprintf("checkpoint %d is signed by key %s, which this verifier does not have: load the key (an operational problem, not tampering)", c.Seq, c.KID)
			return nil
		}
		v.tamper(c.First, "", fmt.Sprintf("checkpoint %d (%s) has an invalid signature: %v", c.Seq, c.StreamID, err))
		return nil
	}
	v.r.Checkpoints++
	if c.Accepted != "" {
		v.r.Accepted = append(v.r.Accepted, c.Summary())
	}
	switch {
	case first && c.Seq != 1:
		// The anchor retention left: its events are gone on purpose, and
		// nothing at or before its range may remain.
		v.r.FromSeq = c.Seq
		if recs, err := v.l.st.Events(ctx, "-", c.Last, 1); err != nil {
			return err
		} else if len(recs) > 0 {
			e := decodeEntry(recs[0])
			v.tamper(e.StreamID, e.Event.ID, fmt.Sprintf("the checkpoints before seq %d are missing while their events remain (deleted checkpoints, not retention)", c.Seq))
			return nil
		}
		v.pos = c.Last
		p := c
		v.prev = &p
		return nil
	case first:
		v.r.FromSeq = 1
	case c.Seq != v.prev.Seq+1 || c.Prev != v.prev.Digest():
		v.tamper(c.First, "", fmt.Sprintf("checkpoint chain broken between seq %d and seq %d: a checkpoint was deleted, altered or inserted", v.prev.Seq, c.Seq))
		return nil
	}
	// The events from the last accounted one through c.Last must be
	// exactly c's leaves.
	next := 0
	err := v.l.Range(ctx, v.after(), func(e Entry) bool {
		if next == len(c.Leaves) {
			if StreamLess(c.Last, e.StreamID) {
				return false
			}
		}
		if next < len(c.Leaves) && StreamLess(c.Leaves[next].ID, e.StreamID) {
			v.tamper(c.Leaves[next].ID, "", fmt.Sprintf("event %s, covered by checkpoint %d, is missing (deleted)", c.Leaves[next].ID, c.Seq))
			return false
		}
		if next == len(c.Leaves) || c.Leaves[next].ID != e.StreamID {
			v.tamper(e.StreamID, e.Event.ID, fmt.Sprintf("event %s is in no checkpoint's place (inserted, or its checkpoint is missing)", e.StreamID))
			return false
		}
		if c.Leaves[next].Hash != leafHash(e.StreamID, e.Raw) {
			v.tamper(e.StreamID, e.Event.ID, fmt.Sprintf("event %s does not match its checkpoint (modified)", e.StreamID))
			return false
		}
		// An operator's accept signed the events as they are.
		if c.Accepted == "" {
			v.checkTime(e)
		}
		next++
		v.r.Verified++
		return next < len(c.Leaves)
	})
	if err != nil {
		return err
	}
	if v.r.Problem == "" && next < len(c.Leaves) {
		v.tamper(c.Leaves[next].ID, "", fmt.Sprintf("event %s, covered by checkpoint %d, is missing (deleted)", c.Leaves[next].ID, c.Seq))
	}
	v.pos = c.Last
	p := c
	v.prev = &p
	return nil
}

// StreamLess orders stream ids ("ms-seq") numerically.
func StreamLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	if am != bm {
		return am < bm
	}
	return as < bs
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	s, _ := strconv.ParseUint(seq, 10, 64)
	return m, s
}

// ReadWitness reads the checkpoints a witness saw: the JSON lines of `audit
// export` ({"checkpoint":{…}} lines among the events), of the service log
// (records whose "checkpoint" attribute is a checkpoint summary), or of a
// witness file (IMPERSONATOR_AUDIT_WITNESS). Other lines are skipped. In a
// witness file, an accept that replaced the chain the instance had seen
// ({"cleared":{…,"abandoned":true}}) starts the witness over: the operator
// accepted the new chain, whose accepted checkpoints verify reports.
func ReadWitness(r io.Reader) ([]Summary, error) {
	var out []Summary
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var line struct {
			Checkpoint *Summary       `json:"checkpoint"`
			Cleared    *witnessAccept `json:"cleared"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if line.Cleared != nil && line.Cleared.Abandoned {
			out = out[:0]
		}
		if line.Checkpoint == nil || line.Checkpoint.Digest == "" {
			continue
		}
		out = append(out, *line.Checkpoint)
	}
	return out, sc.Err()
}
