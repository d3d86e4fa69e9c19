package audit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Tamper evidence (README, "Audit log"): CloudTrail-style signed, chained
// checkpoints. Every interval, one instance reads the events appended since
// the previous checkpoint and writes a checkpoint listing each event's
// stream id and the SHA-256 of its stored bytes, the digest of the previous
// checkpoint, and a signature by the service's key. Verification recomputes
// every hash from the events, so it names the first event that was changed,
// deleted or inserted, and checks the chain of checkpoints.

// Leaf is one event as a checkpoint covers it.
type Leaf struct {
	ID   string `json:"id"`   // stream id
	Hash string `json:"hash"` // base64url SHA-256 of the stored event bytes
}

// Checkpoint covers the events after the previous checkpoint, up to Last.
type Checkpoint struct {
	Seq    int64     `json:"seq"`
	Prev   string    `json:"prev"` // Digest of the previous checkpoint; empty for seq 1
	First  string    `json:"first"`
	Last   string    `json:"last"`
	Leaves []Leaf    `json:"leaves"`
	Time   time.Time `json:"time"`
	// Accepted is an operator's signed statement when the checkpoint covers
	// events the checkpointer refused to sign on its own (Log.Accept).
	Accepted string `json:"accepted,omitempty"`
	KID      string `json:"kid,omitempty"`
	Sig      string `json:"sig,omitempty"` // base64url signature over Body()
}

// Body is what is signed: the checkpoint without its signature and key id
// (the key id only picks the verification key; a wrong one fails).
func (c Checkpoint) Body() []byte {
	c.Sig, c.KID = "", ""
	b, _ := json.Marshal(c)
	return b
}

// Digest identifies the checkpoint in the next one's Prev: SHA-256 of its
// body and signature.
func (c Checkpoint) Digest() string {
	sum := sha256.Sum256(append(c.Body(), c.Sig...))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func leafHash(id, raw string) string {
	h := sha256.New()
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(raw))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// Signer signs and verifies checkpoints (the service's keyset).
type Signer interface {
	Sign(msg []byte) (kid string, sig []byte, err error)
}

// maxLeaves bounds one checkpoint; a backlog is covered by several.
const maxLeaves = 1000

type storedCheckpoint struct {
	StreamID string
	Checkpoint
}

func decodeCheckpoint(r Record) (storedCheckpoint, error) {
	s := storedCheckpoint{StreamID: r.ID}
	if err := json.Unmarshal([]byte(r.Raw), &s.Checkpoint); err != nil {
		return s, fmt.Errorf("checkpoint %s is unreadable: %w", r.ID, err)
	}
	return s, nil
}

func (l *Log) lastCheckpoint(ctx context.Context) (*storedCheckpoint, error) {
	r, ok, err := l.st.LastCheckpoint(ctx)
	if err != nil || !ok {
		return nil, err
	}
	c, err := decodeCheckpoint(r)
	return &c, err
}

// Errors of the checkpointer.
var (
	// ErrCheckpointRace: another instance wrote a checkpoint meanwhile.
	ErrCheckpointRace = errors.New("audit: another instance wrote the checkpoint")
	// ErrIntegrity: the checkpointer refuses to sign what it sees, because
	// signing it would launder a tampering (see WriteCheckpoint). It stays
	// refused until an operator looks: `impersonator audit verify`.
	ErrIntegrity = errors.New("audit: integrity alarm")
)

// Summary is what a checkpoint's witnesses keep of it: enough to tell, later,
// whether Redis's chain still holds it unchanged.
type Summary struct {
	Seq      int64     `json:"seq"`
	Digest   string    `json:"digest"`
	First    string    `json:"first"`
	Last     string    `json:"last"`
	Time     time.Time `json:"time"`
	Events   int       `json:"events"`
	Accepted string    `json:"accepted,omitempty"`
}

// Summary returns the checkpoint's summary.
func (c Checkpoint) Summary() Summary {
	return Summary{Seq: c.Seq, Digest: c.Digest(), First: c.First, Last: c.Last, Time: c.Time, Events: len(c.Leaves), Accepted: c.Accepted}
}

// storedTime is the "time" an event's stored bytes hold (zero when
// unreadable).
func storedTime(raw string) time.Time {
	var t struct {
		Time time.Time `json:"time"`
	}
	_ = json.Unmarshal([]byte(raw), &t)
	return t.Time
}

// timeIsID reports whether e's stored time is its stream id's time, to the
// millisecond. One clock (DESIGN.md 3.8): the script that appends an event
// writes its stream id's time into it, so they are equal by construction;
// an event appended again with a new id keeps its old time. Events written
// before that rule carry their instance's clock and differ too: that is
// why a difference is a flag, not a verdict.
func timeIsID(e Entry) bool {
	return storedTime(e.Raw).Equal(streamTime(e.StreamID))
}

func timeProblem(e Entry) string {
	return fmt.Sprintf("event %s's stored time %s is not the time of its stream id (%s): it was appended again or its time was changed (or it was written before the one-clock rule)",
		e.StreamID, storedTime(e.Raw).UTC().Format(time.RFC3339Nano), streamTime(e.StreamID).UTC().Format(time.RFC3339Nano))
}

// streamTime is the Redis server time a stream id was appended at.
func streamTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return time.UnixMilli(n)
}

// WriteCheckpoint covers the events appended since the newest checkpoint
// (at most maxLeaves of them) with a new signed checkpoint, and returns its
// summary (nil: nothing new). It refuses (ErrIntegrity) to sign over what
// looks laundered: a chain that would start, or a range that would begin,
// with events older than maxAge (an honest checkpointer covers every event
// within one interval, so such events mean the checkpoints that covered
// them were deleted), or a chain shorter than the highest seq ever written.
// maxAge 0 turns the check off.
func (l *Log) WriteCheckpoint(ctx context.Context, signer Signer, maxAge time.Duration) (*Summary, error) {
	return l.writeCheckpoint(ctx, signer, maxAge, "")
}

func (l *Log) writeCheckpoint(ctx context.Context, signer Signer, maxAge time.Duration, accepted string) (*Summary, error) {
	// The seal first: it only grows, so a checkpoint another instance
	// appends between the two reads cannot look like a deletion.
	sealed, err := l.st.Sealed(ctx)
	if err != nil {
		return nil, err
	}
	prev, err := l.lastCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	c := Checkpoint{Seq: 1}
	start, prevStreamID := "-", ""
	if prev != nil {
		c.Seq, c.Prev = prev.Seq+1, prev.Digest()
		start, prevStreamID = "("+prev.Last, prev.StreamID
	}
	if c.Seq <= sealed {
		return nil, fmt.Errorf("%w: the newest checkpoint has seq %d but seq %d was written before: checkpoints were deleted", ErrIntegrity, c.Seq-1, sealed)
	}
	recs, err := l.st.Events(ctx, start, "+", maxLeaves)
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	if len(recs) == 0 {
		return nil, nil
	}
	if maxAge > 0 {
		if at := streamTime(recs[0].ID); at.Before(l.now().Add(-maxAge)) {
			what := "start a checkpoint chain"
			if prev != nil {
				what = "cover a range"
			}
			return nil, fmt.Errorf("%w: refusing to %s over event %s of %s, older than %s: checkpoints that covered it were probably deleted",
				ErrIntegrity, what, recs[0].ID, at.UTC().Format(time.RFC3339), maxAge)
		}
	}
	for _, r := range recs {
		c.Leaves = append(c.Leaves, Leaf{ID: r.ID, Hash: leafHash(r.ID, r.Raw)})
	}
	c.First, c.Last = recs[0].ID, recs[len(recs)-1].ID
	c.Time = l.now().UTC().Truncate(time.Millisecond)
	c.Accepted = accepted
	kid, sig, err := signer.Sign(c.Body())
	if err != nil {
		return nil, err
	}
	c.KID, c.Sig = kid, base64.RawURLEncoding.EncodeToString(sig)
	js, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	ok, err := l.st.AppendCheckpoint(ctx, prevStreamID, c.Seq, js)
	if err != nil {
		return nil, fmt.Errorf("audit: write checkpoint: %w", err)
	}
	if !ok {
		return nil, ErrCheckpointRace
	}
	sum := c.Summary()
	return &sum, nil
}

// CatchUp writes checkpoints until every event present when it started is
// covered (events appended meanwhile wait for the next call, so a flood
// cannot keep it from returning), and returns their summaries.
func (l *Log) CatchUp(ctx context.Context, signer Signer, maxAge time.Duration) ([]Summary, error) {
	target, err := l.LastID(ctx)
	if err != nil {
		return nil, err
	}
	var out []Summary
	for {
		sum, err := l.WriteCheckpoint(ctx, signer, maxAge)
		if errors.Is(err, ErrCheckpointRace) {
			continue // another instance moved the chain: build on its checkpoint
		}
		if err != nil || sum == nil {
			return out, err
		}
		out = append(out, *sum)
		if !StreamLess(sum.Last, target) {
			return out, nil
		}
	}
}

// MaxStatementBytes bounds an accept's statement (it is the reason of its
// audit.accepted event, whose cap is the same).
const MaxStatementBytes = MaxReasonBytes

// Accept covers, under an operator's statement, the events the
// checkpointer refuses to sign: events older than twice its interval that
// no checkpoint covers (after every instance was down with events left
// uncovered, say), or a chain an instance no longer finds what it saw in
// (after the operator looked at what `audit verify` and the witness say).
// It first appends an audit.accepted event by `by` with the statement as
// its reason, then signs checkpoints that carry the statement and cover
// that event: the pair is what clears the running instances' sticky alarm
// at their next interval. Verify reports those checkpoints. It never
// accepts a chain shorter than its seal: deleted checkpoints stay reported.
func (l *Log) Accept(ctx context.Context, signer Signer, statement string, by Actor) ([]Summary, error) {
	if statement == "" {
		return nil, errors.New("audit: accepting needs a statement of why")
	}
	if len(statement) > MaxStatementBytes {
		return nil, fmt.Errorf("audit: the statement is longer than %d bytes", MaxStatementBytes)
	}
	var out []Summary
	// An ordinary checkpoint may cover the event first (an instance's
	// interval falls between the append and the signing): then append
	// another, so the accept's own checkpoint covers one.
	for range 3 {
		enc, err := Encoder{Now: l.now}.Encode(Event{Type: AuditAccepted, Actor: by, Reason: statement,
			Detail: "integrity alarm accepted by an operator (impersonator audit accept)"})
		if err != nil {
			return out, err
		}
		id, err := l.st.Append(ctx, enc)
		if err != nil {
			return out, fmt.Errorf("audit: append the accept: %w", err)
		}
		covered := false
		for {
			sum, err := l.writeCheckpoint(ctx, signer, 0, statement)
			if errors.Is(err, ErrCheckpointRace) {
				continue
			}
			if err != nil {
				return out, err
			}
			if sum == nil {
				break
			}
			out = append(out, *sum)
			covered = covered || !StreamLess(id, sum.First) && !StreamLess(sum.Last, id)
		}
		if covered {
			return out, nil
		}
	}
	return out, errors.New("audit: the accept event kept being covered by ordinary checkpoints; run audit accept again")
}

// Checkpointer writes checkpoints every Interval and applies Retention.
type Checkpointer struct {
	Log       *slog.Logger
	Signer    Signer
	Interval  time.Duration
	Retention time.Duration // 0: keep everything
	// Memory is what this instance has seen of the chain (OpenMemory). Its
	// alarm is sticky: once raised, the checkpointer signs nothing until an
	// operator's `impersonator audit accept`. Nil: no memory, and the alarm
	// lowers itself once the checkpointer can sign again.
	Memory *Memory
	// Keys verify the checkpoints Memory reads; nil: Signer, when it can.
	Keys SignatureVerifier
	// Alarm is set to true while the integrity alarm is raised, false
	// otherwise, at every interval.
	Alarm func(bool)
}

// Run writes checkpoints until ctx ends. Each checkpoint goes to the service
// log as a structured record: a witness outside Redis (audit verify
// --witness); with a witness file, there too. It never blocks an append: it
// only reads the audit stream and writes to the checkpoint stream.
func (cp Checkpointer) Run(ctx context.Context, l *Log) {
	t := time.NewTicker(cp.Interval)
	defer t.Stop()
	for {
		cp.Once(ctx, l)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (cp Checkpointer) keys() SignatureVerifier {
	if cp.Keys != nil {
		return cp.Keys
	}
	k, _ := cp.Signer.(SignatureVerifier)
	return k
}

// remember checks Redis's chain against the memory (see Memory.check).
func (cp Checkpointer) remember(ctx context.Context, l *Log) {
	keys := cp.keys()
	if cp.Memory == nil || keys == nil {
		return
	}
	if err := cp.Memory.check(ctx, l, keys, cp.Retention, cp.Log); err != nil && ctx.Err() == nil {
		cp.Log.Error("audit: cannot compare the checkpoint chain with what this instance saw; trying again next interval", "error", err)
	}
}

func (cp Checkpointer) setAlarm(on bool) {
	if cp.Alarm != nil {
		cp.Alarm(on)
	}
}

// Once checks the chain against what this instance saw, writes the
// checkpoints due now, logs each, and applies retention. While the alarm
// is raised it only logs it, every interval.
func (cp Checkpointer) Once(ctx context.Context, l *Log) {
	cp.remember(ctx, l)
	if cp.Memory != nil {
		if problem := cp.Memory.Alarm(); problem != "" {
			cp.Log.Error("AUDIT INTEGRITY ALARM: the checkpointer signs nothing until an operator runs `impersonator audit accept --statement …`; see `impersonator audit verify`", "problem", problem)
			cp.setAlarm(true)
			return
		}
	}
	sums, err := l.CatchUp(ctx, cp.Signer, 2*cp.Interval)
	for _, s := range sums {
		cp.Log.Info("audit checkpoint", "checkpoint", s)
	}
	switch {
	case errors.Is(err, ErrIntegrity):
		cp.Log.Error("AUDIT INTEGRITY ALARM: the checkpointer refuses to sign; run `impersonator audit verify`", "error", err)
		if cp.Memory != nil {
			cp.Memory.raise(ctx, l, err.Error(), cp.Log)
		}
		cp.setAlarm(true)
		return
	case err != nil && ctx.Err() == nil:
		cp.Log.Error("audit checkpoint failed; events since the last checkpoint stay uncovered until the next try", "error", err)
		return
	}
	if len(sums) > 0 {
		cp.remember(ctx, l) // what it wrote
	}
	if err == nil {
		cp.setAlarm(cp.Memory != nil && cp.Memory.Alarm() != "")
	}
	if cp.Retention > 0 {
		if n, err := l.Trim(ctx, cp.Retention); err != nil && ctx.Err() == nil {
			cp.Log.Error("audit retention failed", "error", err)
		} else if n > 0 {
			cp.Log.Info("audit retention trimmed events", "events", n)
		}
	}
}

// Trim removes the events, and the checkpoints before it, of the newest
// checkpoint older than retention, keeping that checkpoint as the anchor
// the remaining chain verifies from. Only whole checkpointed ranges go, in
// one atomic step. It returns how many events it removed.
func (l *Log) Trim(ctx context.Context, retention time.Duration) (int64, error) {
	cutoff := l.now().Add(-retention)
	var anchor *storedCheckpoint
	start := "-"
	for {
		recs, err := l.st.Checkpoints(ctx, start, "+", 100)
		if err != nil {
			return 0, err
		}
		for _, r := range recs {
			c, err := decodeCheckpoint(r)
			if err != nil {
				return 0, err
			}
			if !c.Time.Before(cutoff) {
				recs = nil
				break
			}
			if anchor == nil || c.Seq > anchor.Seq {
				anchor = &c
			}
		}
		if len(recs) < 100 {
			break
		}
		start = "(" + recs[len(recs)-1].ID
	}
	if anchor == nil {
		return 0, nil
	}
	ms, seq, _ := strings.Cut(anchor.Last, "-")
	n, _ := strconv.ParseUint(seq, 10, 64)
	return l.st.Trim(ctx, ms+"-"+strconv.FormatUint(n+1, 10), anchor.StreamID)
}
