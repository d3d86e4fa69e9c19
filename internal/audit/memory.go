package audit

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Rewrite evidence (README, "Audit log"): an attacker with write access to
// Redis can delete the whole chain and append the events again, minus one.
// Nothing left in Redis shows it; what an instance has seen does. Memory is
// that: the newest checkpoint this instance wrote or read, checked against
// Redis's chain at every checkpoint interval, and its integrity alarm,
// which stays raised until an operator's `impersonator audit accept`. With a
// witness file it also survives a restart, and every checkpoint it sees is
// appended there, outside Redis.

// Memory is what one instance remembers of the checkpoint chain. The zero
// value is not usable: see OpenMemory.
type Memory struct {
	path string // the witness file; "": none

	mu     sync.Mutex
	seen   *Summary // the newest checkpoint seen
	seenID string   // its stream id in the checkpoint stream
	alarm  *memoryAlarm
}

// memoryAlarm is a raised integrity alarm: what is wrong, and where an
// accept has to come after to clear it.
type memoryAlarm struct {
	Problem string `json:"problem"`
	// Floor: the accept's audit.accepted event must have a stream id after
	// it (the newest event when the alarm was raised, or the end of the
	// remembered checkpoint, whichever is later), so no accept older than
	// the alarm clears it.
	Floor string `json:"floor"`
	// After: the checkpoint stream's newest id when the alarm was raised;
	// where the search for the accept starts (a position, not a proof).
	After string `json:"after,omitempty"`
}

// witnessLine is one line of the witness file. Checkpoint lines have the
// shape of `audit export`'s ({"checkpoint":{…}}), so ReadWitness reads
// both.
type witnessLine struct {
	Checkpoint   *Summary       `json:"checkpoint,omitempty"`
	CheckpointID string         `json:"checkpoint_id,omitempty"` // its stream id
	Alarm        *memoryAlarm   `json:"alarm,omitempty"`
	Cleared      *witnessAccept `json:"cleared,omitempty"`
	Time         time.Time      `json:"time"`
}

// witnessAccept records an accept that cleared the alarm. Abandoned: the
// checkpoints remembered before it are no longer in the chain (the
// operator accepted a restarted chain), so a witness reader starts over.
type witnessAccept struct {
	Statement string  `json:"statement"`
	By        Summary `json:"by"`
	Abandoned bool    `json:"abandoned,omitempty"`
}

// OpenMemory returns an instance's memory. With a witness file (path not
// empty), it recovers what the file says this instance saw before (the
// newest checkpoint, a raised alarm) and checks that it can append to it.
func OpenMemory(path string) (*Memory, error) {
	m := &Memory{path: path}
	if path == "" {
		return m, nil
	}
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("audit witness %s: %w", path, err)
	default:
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var l witnessLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue // a line torn by a crash
			}
			switch {
			case l.Checkpoint != nil && l.Checkpoint.Digest != "" && l.CheckpointID != "":
				s := *l.Checkpoint
				m.seen, m.seenID = &s, l.CheckpointID
			case l.Alarm != nil:
				a := *l.Alarm
				m.alarm = &a
			case l.Cleared != nil:
				m.alarm = nil
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("audit witness %s: %w", path, err)
		}
	}
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit witness %s: %w", path, err)
	}
	return m, w.Close()
}

// Alarm returns the raised alarm's problem, or "" when none is raised.
func (m *Memory) Alarm() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.alarm == nil {
		return ""
	}
	return m.alarm.Problem
}

// Seen returns the newest checkpoint this instance has seen, if any.
func (m *Memory) Seen() (Summary, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		return Summary{}, false
	}
	return *m.seen, true
}

// Witness returns the checkpoints verification must find unchanged in
// Redis: the witness file's, or else the one remembered.
func (m *Memory) Witness() ([]Summary, error) {
	if m.path != "" {
		f, err := os.Open(m.path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if err == nil {
			defer f.Close()
			return ReadWitness(f)
		}
	}
	if s, ok := m.Seen(); ok {
		return []Summary{s}, nil
	}
	return nil, nil
}

// write appends one line to the witness file and syncs it to disk.
func (m *Memory) write(l witnessLine) error {
	if m.path == "" {
		return nil
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(m.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit witness: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit witness: %w", err)
	}
	return nil
}

// remember makes c the newest checkpoint seen and appends it to the
// witness file.
func (m *Memory) remember(c storedCheckpoint, log *slog.Logger) {
	s := c.Summary()
	m.mu.Lock()
	m.seen, m.seenID = &s, c.StreamID
	m.mu.Unlock()
	if err := m.write(witnessLine{Checkpoint: &s, CheckpointID: c.StreamID, Time: time.Now().UTC()}); err != nil {
		log.Error("audit witness: cannot append the checkpoint; the witness file misses it", "seq", s.Seq, "error", err)
	}
}

// raise raises the alarm (if none is raised yet) with problem.
func (m *Memory) raise(ctx context.Context, l *Log, problem string, log *slog.Logger) {
	m.mu.Lock()
	raised := m.alarm != nil
	floor := ""
	if m.seen != nil {
		floor = m.seen.Last
	}
	m.mu.Unlock()
	if raised {
		return
	}
	a := &memoryAlarm{Problem: problem, Floor: floor}
	if last, err := l.LastID(ctx); err == nil && (floor == "" || StreamLess(floor, last)) {
		a.Floor = last
	}
	if r, ok, err := l.st.LastCheckpoint(ctx); err == nil && ok {
		a.After = r.ID
	}
	m.mu.Lock()
	m.alarm = a
	m.mu.Unlock()
	if err := m.write(witnessLine{Alarm: a, Time: time.Now().UTC()}); err != nil {
		log.Error("audit witness: cannot record the alarm", "error", err)
	}
}

// errUnknownKey: a checkpoint is signed by a key this instance has not
// loaded yet; an operational matter, never an alarm.
var errUnknownKey = errors.New("audit: a checkpoint is signed by a key this instance does not have")

// checkSignature reports whether c's signature is valid: nil, errUnknownKey,
// or the problem.
func checkSignature(keys SignatureVerifier, c storedCheckpoint) error {
	sig, _ := base64.RawURLEncoding.DecodeString(c.Sig)
	if err := keys.VerifySignature(c.KID, c.Body(), sig); err != nil {
		if !keys.HasKey(c.KID) {
			return fmt.Errorf("%w (kid %s, checkpoint %d)", errUnknownKey, c.KID, c.Seq)
		}
		return fmt.Errorf("checkpoint seq %d (%s) has an invalid signature: %v", c.Seq, c.StreamID, err)
	}
	return nil
}

// check compares Redis's chain with what m has seen and remembers what is
// new; a chain that no longer holds the remembered checkpoint unchanged
// (deleted, restarted, rewritten), continues it with a checkpoint that does
// not follow it, or has a seal below it raises the alarm. While the alarm
// is raised, it looks for the accept that clears it instead. It returns
// only errors that stopped it from checking.
func (m *Memory) check(ctx context.Context, l *Log, keys SignatureVerifier, retention time.Duration, log *slog.Logger) error {
	m.mu.Lock()
	alarm, seen, seenID := m.alarm, m.seen, m.seenID
	m.mu.Unlock()
	if alarm != nil {
		return m.lookForAccept(ctx, l, keys, *alarm, log)
	}
	if seen == nil {
		rec, ok, err := l.st.LastCheckpoint(ctx)
		if err != nil || !ok {
			return err
		}
		c, err := decodeCheckpoint(rec)
		if err == nil {
			err = checkSignature(keys, c)
		}
		if errors.Is(err, errUnknownKey) {
			return err
		}
		if err != nil {
			m.raise(ctx, l, err.Error(), log)
			return nil
		}
		m.remember(c, log)
		return m.walk(ctx, l, keys, c, log)
	}
	recs, err := l.st.Checkpoints(ctx, seenID, seenID, 1)
	if err != nil {
		return err
	}
	var from storedCheckpoint
	if len(recs) == 1 {
		from, err = decodeCheckpoint(recs[0])
	}
	switch {
	case len(recs) == 1 && err == nil && from.Digest() == seen.Digest:
	case len(recs) == 1:
		m.raise(ctx, l, fmt.Sprintf("checkpoint seq %d at %s is not the one this instance saw (digest %s, events %s..%s): the chain was rewritten",
			seen.Seq, seenID, seen.Digest, seen.First, seen.Last), log)
		return nil
	default:
		// Retention removes a checkpoint only once a newer one, older than
		// the retention, anchors the chain.
		first, ok, err := m.anchorAfter(ctx, l, keys, *seen, retention)
		if err != nil {
			return err
		}
		if !ok {
			m.raise(ctx, l, fmt.Sprintf("checkpoint seq %d (digest %s, events %s..%s), which this instance saw, is no longer in Redis's chain: the chain was deleted or rewritten",
				seen.Seq, seen.Digest, seen.First, seen.Last), log)
			return nil
		}
		from = first
		m.remember(first, log)
	}
	return m.walk(ctx, l, keys, from, log)
}

// anchorAfter returns the chain's first checkpoint when retention explains
// why the remembered one is gone: retention is on, the remembered one is
// older than it, and the first checkpoint, validly signed, comes after it.
func (m *Memory) anchorAfter(ctx context.Context, l *Log, keys SignatureVerifier, seen Summary, retention time.Duration) (storedCheckpoint, bool, error) {
	if retention <= 0 || !seen.Time.Before(l.now().Add(-retention)) {
		return storedCheckpoint{}, false, nil
	}
	recs, err := l.st.Checkpoints(ctx, "-", "+", 1)
	if err != nil || len(recs) == 0 {
		return storedCheckpoint{}, false, err
	}
	c, err := decodeCheckpoint(recs[0])
	if err != nil || c.Seq <= seen.Seq || checkSignature(keys, c) != nil {
		return storedCheckpoint{}, false, nil
	}
	return c, true, nil
}

// walk follows the chain from c (already checked) to its end: each
// checkpoint must be signed and follow the one before; each is remembered.
// Then the seal must be at least the newest seq.
func (m *Memory) walk(ctx context.Context, l *Log, keys SignatureVerifier, c storedCheckpoint, log *slog.Logger) error {
	prev := c
	for {
		recs, err := l.st.Checkpoints(ctx, "("+prev.StreamID, "+", 100)
		if err != nil {
			return err
		}
		for _, r := range recs {
			next, err := decodeCheckpoint(r)
			if err == nil {
				err = checkSignature(keys, next)
			}
			if errors.Is(err, errUnknownKey) {
				return err
			}
			if err == nil && (next.Seq != prev.Seq+1 || next.Prev != prev.Digest()) {
				err = fmt.Errorf("checkpoint seq %d (%s) does not follow seq %d (digest %s), which this instance saw: the chain forked or was rewritten",
					next.Seq, next.StreamID, prev.Seq, prev.Digest())
			}
			if err != nil {
				m.raise(ctx, l, err.Error(), log)
				return nil
			}
			m.remember(next, log)
			prev = next
		}
		if len(recs) < 100 {
			break
		}
	}
	sealed, err := l.st.Sealed(ctx)
	if err != nil {
		return err
	}
	if sealed < prev.Seq {
		m.raise(ctx, l, fmt.Sprintf("the checkpoint seal is %d, below seq %d, which this instance saw: the seal was lowered", sealed, prev.Seq), log)
	}
	return nil
}

// lookForAccept clears the alarm when the chain holds an accept made after
// it: a validly signed checkpoint carrying an operator's statement that
// covers an audit.accepted event with that statement, appended after the
// alarm's floor. Only `impersonator audit accept`, with the signing key,
// writes such a checkpoint; an attacker who appends an audit.accepted event
// gets it covered, at best, by an ordinary checkpoint, which does not clear
// anything. The instance then remembers the chain from that checkpoint.
func (m *Memory) lookForAccept(ctx context.Context, l *Log, keys SignatureVerifier, a memoryAlarm, log *slog.Logger) error {
	start := "-"
	if a.After != "" {
		start = "(" + a.After
	}
	for {
		recs, err := l.st.Checkpoints(ctx, start, "+", 100)
		if err != nil {
			return err
		}
		for _, r := range recs {
			c, err := decodeCheckpoint(r)
			if err != nil || c.Accepted == "" || checkSignature(keys, c) != nil {
				continue
			}
			ok, err := l.coversAccept(ctx, c, a.Floor)
			if err != nil {
				return err
			}
			if ok {
				return m.clear(ctx, l, keys, c, log)
			}
		}
		if len(recs) < 100 {
			return nil
		}
		start = "(" + recs[len(recs)-1].ID
	}
}

// coversAccept reports whether c covers, after floor, an audit.accepted
// event whose stored bytes match c's leaf and whose statement is c's.
func (l *Log) coversAccept(ctx context.Context, c storedCheckpoint, floor string) (bool, error) {
	for _, leaf := range c.Leaves {
		if floor != "" && !StreamLess(floor, leaf.ID) {
			continue
		}
		recs, err := l.st.Events(ctx, leaf.ID, leaf.ID, 1)
		if err != nil {
			return false, err
		}
		if len(recs) == 0 || leafHash(recs[0].ID, recs[0].Raw) != leaf.Hash {
			continue
		}
		if e := decodeEntry(recs[0]).Event; e.Type == AuditAccepted && e.Reason == c.Accepted {
			return true, nil
		}
	}
	return false, nil
}

// clear lowers the alarm after the accept c, and remembers the chain from c.
func (m *Memory) clear(ctx context.Context, l *Log, keys SignatureVerifier, c storedCheckpoint, log *slog.Logger) error {
	m.mu.Lock()
	seen, seenID := m.seen, m.seenID
	m.alarm = nil
	m.mu.Unlock()
	abandoned := seen != nil
	if seen != nil {
		if recs, err := l.st.Checkpoints(ctx, seenID, seenID, 1); err == nil && len(recs) == 1 {
			if old, err := decodeCheckpoint(recs[0]); err == nil && old.Digest() == seen.Digest {
				abandoned = false
			}
		}
	}
	log.Warn("audit integrity alarm cleared by `impersonator audit accept`", "statement", c.Accepted, "checkpoint", c.Seq, "abandoned_seq", abandonedSeq(seen, abandoned))
	if err := m.write(witnessLine{Cleared: &witnessAccept{Statement: c.Accepted, By: c.Summary(), Abandoned: abandoned}, Time: time.Now().UTC()}); err != nil {
		log.Error("audit witness: cannot record the accept", "error", err)
	}
	m.remember(c, log)
	return m.walk(ctx, l, keys, c, log)
}

func abandonedSeq(seen *Summary, abandoned bool) int64 {
	if seen == nil || !abandoned {
		return 0
	}
	return seen.Seq
}
