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

	"github.com/redis/go-redis/v9"
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
	KID    string    `json:"kid,omitempty"`
	Sig    string    `json:"sig,omitempty"` // base64url signature over Body()
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

// SignatureVerifier checks checkpoint signatures.
type SignatureVerifier interface {
	VerifySignature(kid string, msg, sig []byte) error
}

// maxLeaves bounds one checkpoint; a backlog is covered by several.
const maxLeaves = 1000

// appendCheckpointScript: KEYS[1] checkpoint stream; ARGV[1] the stream id
// of the checkpoint this one follows ("" for none), ARGV[2] checkpoint JSON.
// Appends only if the newest checkpoint is still the expected one, so two
// instances never fork the chain.
var appendCheckpointScript = redis.NewScript(`
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local lastID = ''
if #last > 0 then lastID = last[1][1] end
if lastID ~= ARGV[1] then return {0, lastID} end
local id = redis.call('XADD', KEYS[1], '*', 'c', ARGV[2])
return {1, id}
`)

type storedCheckpoint struct {
	StreamID string
	Checkpoint
}

func (l *Log) lastCheckpoint(ctx context.Context) (*storedCheckpoint, error) {
	msgs, err := l.rdb.XRevRangeN(ctx, l.checkpoints, "+", "-", 1).Result()
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	c, err := decodeCheckpoint(msgs[0])
	return &c, err
}

func decodeCheckpoint(m redis.XMessage) (storedCheckpoint, error) {
	raw, _ := m.Values["c"].(string)
	s := storedCheckpoint{StreamID: m.ID}
	if err := json.Unmarshal([]byte(raw), &s.Checkpoint); err != nil {
		return s, fmt.Errorf("checkpoint %s is unreadable: %w", m.ID, err)
	}
	return s, nil
}

// ErrCheckpointRace: another instance wrote a checkpoint meanwhile.
var ErrCheckpointRace = errors.New("audit: another instance wrote the checkpoint")

// WriteCheckpoint covers the events appended since the newest checkpoint
// (at most maxLeaves of them) with a new signed checkpoint. It reports
// whether it wrote one (false: nothing new, or another instance won).
func (l *Log) WriteCheckpoint(ctx context.Context, signer Signer) (bool, error) {
	prev, err := l.lastCheckpoint(ctx)
	if err != nil {
		return false, err
	}
	c := Checkpoint{Seq: 1}
	start, prevStreamID := "-", ""
	if prev != nil {
		c.Seq, c.Prev = prev.Seq+1, prev.Digest()
		start, prevStreamID = "("+prev.Last, prev.StreamID
	}
	msgs, err := l.rdb.XRangeN(ctx, l.stream, start, "+", maxLeaves).Result()
	if err != nil {
		return false, fmt.Errorf("audit: read: %w", err)
	}
	if len(msgs) == 0 {
		return false, nil
	}
	for _, m := range msgs {
		raw, _ := m.Values["e"].(string)
		c.Leaves = append(c.Leaves, Leaf{ID: m.ID, Hash: leafHash(m.ID, raw)})
	}
	c.First, c.Last = msgs[0].ID, msgs[len(msgs)-1].ID
	c.Time = l.now().UTC().Truncate(time.Millisecond)
	kid, sig, err := signer.Sign(c.Body())
	if err != nil {
		return false, err
	}
	c.KID, c.Sig = kid, base64.RawURLEncoding.EncodeToString(sig)
	js, err := json.Marshal(c)
	if err != nil {
		return false, err
	}
	res, err := appendCheckpointScript.Run(ctx, l.rdb, []string{l.checkpoints}, prevStreamID, string(js)).Slice()
	if err != nil {
		return false, fmt.Errorf("audit: write checkpoint: %w", err)
	}
	if code, _ := res[0].(int64); code != 1 {
		return false, ErrCheckpointRace
	}
	return true, nil
}

// CatchUp writes checkpoints until every event is covered.
func (l *Log) CatchUp(ctx context.Context, signer Signer) (int, error) {
	n := 0
	for {
		wrote, err := l.WriteCheckpoint(ctx, signer)
		if errors.Is(err, ErrCheckpointRace) {
			continue // another instance moved the chain: build on its checkpoint
		}
		if err != nil || !wrote {
			return n, err
		}
		n++
	}
}

// RunCheckpointer writes checkpoints every interval until ctx ends, and
// applies retention (0: keep everything). It never blocks an append: it
// only reads the audit stream and writes to the checkpoint stream.
func (l *Log) RunCheckpointer(ctx context.Context, log *slog.Logger, signer Signer, interval, retention time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := l.CatchUp(ctx, signer); err != nil && ctx.Err() == nil {
			log.Error("audit checkpoint failed; events since the last checkpoint stay uncovered until the next try", "error", err)
		} else if n > 0 {
			log.Debug("audit checkpoints written", "count", n)
		}
		if retention > 0 {
			if n, err := l.Trim(ctx, retention); err != nil && ctx.Err() == nil {
				log.Error("audit retention failed", "error", err)
			} else if n > 0 {
				log.Info("audit retention trimmed events", "events", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Trim removes the events, and the checkpoints before it, of the newest
// checkpoint older than retention, keeping that checkpoint as the anchor
// the remaining chain verifies from. Only whole checkpointed ranges go. It
// returns how many events it removed.
func (l *Log) Trim(ctx context.Context, retention time.Duration) (int64, error) {
	msgs, err := l.rdb.XRange(ctx, l.checkpoints, "-", "+").Result()
	if err != nil {
		return 0, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	cutoff := l.now().Add(-retention)
	var anchor *storedCheckpoint
	for _, m := range msgs {
		c, err := decodeCheckpoint(m)
		if err != nil {
			return 0, err
		}
		if !c.Time.Before(cutoff) {
			break
		}
		if anchor == nil || c.Seq > anchor.Seq {
			anchor = &c
		}
	}
	if anchor == nil {
		return 0, nil
	}
	ms, seq, _ := strings.Cut(anchor.Last, "-")
	n, _ := strconv.ParseUint(seq, 10, 64)
	minID := ms + "-" + strconv.FormatUint(n+1, 10)
	removed, err := l.rdb.XTrimMinID(ctx, l.stream, minID).Result()
	if err != nil {
		return 0, fmt.Errorf("audit: trim events: %w", err)
	}
	if err := l.rdb.XTrimMinID(ctx, l.checkpoints, anchor.StreamID).Err(); err != nil {
		return removed, fmt.Errorf("audit: trim checkpoints: %w", err)
	}
	return removed, nil
}
