package session

import (
	"context"
	"errors"
	"time"

	"github.com/impersonator/impersonator/internal/store"
)

// SweepStore is what the sweeper needs of Redis.
type SweepStore interface {
	SweepLease(ctx context.Context, owner string, ttl time.Duration) (bool, error)
	Due(ctx context.Context, n int64) ([]string, error)
	SessionRecord(ctx context.Context, sid string) (store.Session, error)
	Forget(ctx context.Context, sid string) error
}

// Sweeper ends the sessions nobody touches again: idle, past their cap or
// never used. One instance at a time sweeps, through a Redis lease; each
// end is recorded with its session.ended event in the same step.
type Sweeper struct {
	Store    SweepStore
	Sessions *Handlers
	Owner    string        // this instance's lease name
	Interval time.Duration // how often to look
}

// sweepBatch bounds the sessions ended per look.
const sweepBatch = 200

// Run sweeps every Interval until ctx ends.
func (sw Sweeper) Run(ctx context.Context) {
	t := time.NewTicker(sw.Interval)
	defer t.Stop()
	for {
		if _, err := sw.Once(ctx); err != nil && ctx.Err() == nil {
			sw.Sessions.log.Error("session sweep failed; lapsed sessions are ended at the next try", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once ends every session due now, if this instance holds the lease, and
// returns how many it ended.
func (sw Sweeper) Once(ctx context.Context) (int, error) {
	ok, err := sw.Store.SweepLease(ctx, sw.Owner, 3*sw.Interval+time.Second)
	if err != nil || !ok {
		return 0, err
	}
	n := 0
	for {
		ids, err := sw.Store.Due(ctx, sweepBatch)
		if err != nil {
			return n, err
		}
		ended := 0
		for _, sid := range ids {
			sess, err := sw.Store.SessionRecord(ctx, sid)
			if errors.Is(err, store.ErrNoSession) {
				// The record outlived its grace with no sweeper running.
				if err := sw.Store.Forget(ctx, sid); err != nil {
					return n, err
				}
				sw.Sessions.log.Error("a lapsed session's record expired before its end could be recorded", "sid", sid)
				continue
			}
			if err != nil {
				return n, err
			}
			if sw.Sessions.EndLapsed(ctx, sess, RequestInfo{RequestID: "sweeper"}) {
				ended++
			}
		}
		n += ended
		if len(ids) < sweepBatch || ended == 0 {
			return n, nil
		}
	}
}
