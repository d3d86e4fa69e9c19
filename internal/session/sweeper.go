package session

import (
	"context"
	"errors"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
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
	// Consents, when set, also ends the live sessions of each record
	// whose consent lapsed by its until (as a withdrawal does), through
	// ConsentDue.
	Consents   *Consents
	ConsentDue ConsentLapses
}

// ConsentLapses is what the sweeper needs of Redis to end the sessions of
// lapsed consents.
type ConsentLapses interface {
	DueConsents(ctx context.Context, n int64) ([]audit.Subject, error)
	ExpireConsent(ctx context.Context, subj audit.Subject) (bool, error)
	ConsentHandled(ctx context.Context, subj audit.Subject) error
}

// ConsentExpired is the detail of the sessions revoked because their
// record's consent lapsed.
const ConsentExpired = "consent expired"

// endLapsedConsents revokes the live sessions of each record whose consent
// lapsed (session.revoked, "consent expired"), after voiding the tokens
// minted under it and not redeemed yet. A lapse is forgotten only once its
// sessions are revoked: a failure is retried at the next sweep.
func (sw Sweeper) endLapsedConsents(ctx context.Context) error {
	if sw.Consents == nil || sw.ConsentDue == nil {
		return nil
	}
	due, err := sw.ConsentDue.DueConsents(ctx, sweepBatch)
	if err != nil {
		return err
	}
	for _, subj := range due {
		lapsed, err := sw.ConsentDue.ExpireConsent(ctx, subj)
		if err != nil {
			return err
		}
		if lapsed {
			if _, err := sw.Consents.RevokeSubject(ctx, subj, RequestInfo{RequestID: "sweeper"}, ConsentExpired); err != nil {
				return err
			}
		}
		if err := sw.ConsentDue.ConsentHandled(ctx, subj); err != nil {
			return err
		}
	}
	return nil
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
	if err := sw.endLapsedConsents(ctx); err != nil {
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
