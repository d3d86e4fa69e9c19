package audit

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Report is the outcome of Verify.
type Report struct {
	OK bool `json:"ok"`
	// Checkpoints verified, and the sequence number verification starts at:
	// 1, or the anchor left by retention trimming.
	Checkpoints int   `json:"checkpoints"`
	FromSeq     int64 `json:"from_seq,omitempty"`
	// Events whose bytes matched a signed checkpoint.
	Verified int `json:"events_verified"`
	// Events after the newest checkpoint: not covered yet.
	Uncovered int `json:"events_not_yet_checkpointed"`
	// The first bad event: its stream id, its event id when readable, and
	// what is wrong.
	FirstBad   string `json:"first_bad_event,omitempty"`
	FirstBadID string `json:"first_bad_event_id,omitempty"`
	Problem    string `json:"problem,omitempty"`
}

// Verify recomputes every event's hash, checks every checkpoint's signature
// and the chain between checkpoints, and names the first bad event.
func (l *Log) Verify(ctx context.Context, keys SignatureVerifier) (Report, error) {
	msgs, err := l.rdb.XRange(ctx, l.checkpoints, "-", "+").Result()
	if err != nil {
		return Report{}, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	var r Report
	var chainProblem string
	var leaves []Leaf
	var prev *storedCheckpoint
	skipThrough := "" // a trimmed anchor's range: its events are gone on purpose
	for i, m := range msgs {
		c, err := decodeCheckpoint(m)
		if err != nil {
			if chainProblem == "" {
				chainProblem = err.Error()
			}
			continue
		}
		sig, _ := base64.RawURLEncoding.DecodeString(c.Sig)
		if err := keys.VerifySignature(c.KID, c.Body(), sig); err != nil {
			if chainProblem == "" {
				chainProblem = fmt.Sprintf("checkpoint %d (%s) has an invalid signature: %v", c.Seq, c.StreamID, err)
			}
			continue // its leaves cannot be trusted: its events show as uncovered
		}
		switch {
		case i == 0 && c.Seq != 1:
			r.FromSeq, skipThrough = c.Seq, c.Last
		case i == 0:
			r.FromSeq = 1
		case prev == nil:
		case c.Seq != prev.Seq+1 || c.Prev != prev.Digest():
			if chainProblem == "" {
				chainProblem = fmt.Sprintf("checkpoint chain broken between seq %d and seq %d: a checkpoint was deleted, altered or inserted", prev.Seq, c.Seq)
			}
		}
		if skipThrough == "" || c.Seq != r.FromSeq {
			leaves = append(leaves, c.Leaves...)
		}
		r.Checkpoints++
		p := c
		prev = &p
	}

	if skipThrough != "" {
		// Retention trims whole ranges: nothing at or before the anchor may
		// remain. Something that does means checkpoints were deleted.
		old, err := l.rdb.XRangeN(ctx, l.stream, "-", skipThrough, 1).Result()
		if err != nil {
			return Report{}, fmt.Errorf("audit: read: %w", err)
		}
		if len(old) > 0 {
			e := decodeEntry(old[0])
			r.FirstBad, r.FirstBadID = e.StreamID, e.Event.ID
			r.Problem = fmt.Sprintf("the checkpoints before seq %d are missing while their events remain (deleted checkpoints, not retention)", r.FromSeq)
			return r, nil
		}
	}

	// Walk the stored events against the signed leaves, both in stream order.
	next := 0
	var eventProblem string
	bad := func(e Entry, problem string) bool {
		r.FirstBad, r.FirstBadID, eventProblem = e.StreamID, e.Event.ID, problem
		return false
	}
	start := "-"
	if skipThrough != "" {
		start = "(" + skipThrough
	}
	err = l.Range(ctx, start, func(e Entry) bool {
		if next < len(leaves) && streamLess(leaves[next].ID, e.StreamID) {
			// A signed leaf with no event: deleted.
			r.FirstBad, eventProblem = leaves[next].ID, fmt.Sprintf("event %s, covered by a checkpoint, is missing (deleted)", leaves[next].ID)
			return false
		}
		if next == len(leaves) {
			r.Uncovered++
			return true
		}
		if leaves[next].ID != e.StreamID {
			return bad(e, fmt.Sprintf("event %s is in no checkpoint's place (inserted, or its checkpoint is missing)", e.StreamID))
		}
		if leaves[next].Hash != leafHash(e.StreamID, e.Raw) {
			return bad(e, fmt.Sprintf("event %s does not match its checkpoint (modified)", e.StreamID))
		}
		next++
		r.Verified++
		return true
	})
	if err != nil {
		return Report{}, err
	}
	if eventProblem == "" && next < len(leaves) {
		r.FirstBad = leaves[next].ID
		eventProblem = fmt.Sprintf("event %s, covered by a checkpoint, is missing (deleted)", leaves[next].ID)
	}
	switch {
	case chainProblem != "" && eventProblem != "":
		r.Problem = chainProblem + "; " + eventProblem
	case chainProblem != "":
		r.Problem = chainProblem
	default:
		r.Problem = eventProblem
	}
	r.OK = r.Problem == ""
	if !r.OK {
		r.Uncovered = 0
	}
	return r, nil
}

// streamLess orders stream ids ("ms-seq") numerically.
func streamLess(a, b string) bool { return StreamLess(a, b) }

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
