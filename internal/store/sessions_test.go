package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

// clockStore returns a store whose clock the test moves.
func clockStore(t *testing.T, b backend) (*store.Store, *time.Time) {
	now := t0
	return store.New(b.client(t), store.Options{Prefix: redistest.Prefix(), Now: func() time.Time { return now }}), &now
}

func session(id string) store.Session {
	return store.Session{ID: id, Actor: actor, Subject: subject, Reason: "ticket 1234", TokenID: "jti",
		StartedAt: t0, ExpiresAt: t0.Add(30 * time.Minute), IP: "192.0.2.1"}
}

func TestSessions(t *testing.T) {
	const idle = 10 * time.Minute
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			t.Run("RedeemCreatesOneSession", func(t *testing.T) {
				s, _ := clockStore(t, b)
				if _, err := s.Reserve(ctx, "jti", grant, time.Minute, event(audit.Minted, "m", "")); err != nil {
					t.Fatal(err)
				}
				ok, _, err := s.Redeem(ctx, "jti", session("s1"), idle, event(audit.Redeemed, "r", ""), rejected)
				if err != nil || !ok {
					t.Fatalf("Redeem = %v, %v", ok, err)
				}
				ok, st, err := s.Redeem(ctx, "jti", session("s2"), idle, event(audit.Redeemed, "r2", ""), rejected)
				if err != nil || ok || st != store.Consumed {
					t.Fatalf("second Redeem = %v, %v, %v; want refused as consumed", ok, st, err)
				}
				if _, err := s.GetSession(ctx, "s2"); !errors.Is(err, store.ErrNoSession) {
					t.Errorf("the refused redemption created session s2: %v", err)
				}
				got, err := s.GetSession(ctx, "s1")
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(session("s1"), got); diff != "" {
					t.Errorf("session (-want +got):\n%s", diff)
				}
				want := stamped(event(audit.Minted, "m", ""), event(audit.Redeemed, "r", ""), rejected(store.Consumed))
				if diff := cmp.Diff(want, events(t, s)); diff != "" {
					t.Errorf("audit events (-want +got):\n%s", diff)
				}
			})
			t.Run("IdleTimeout", func(t *testing.T) {
				s, now := clockStore(t, b)
				mustRedeem(t, s, "s1", idle)
				*now = now.Add(9 * time.Minute)
				if _, _, err := s.Touch(ctx, "s1", idle); err != nil {
					t.Fatalf("touch within idle: %v", err)
				}
				*now = now.Add(9 * time.Minute) // 18m after start, 9m after last seen
				if _, _, err := s.Touch(ctx, "s1", idle); err != nil {
					t.Fatalf("touch 9m after the last one: %v", err)
				}
				*now = now.Add(10*time.Minute + time.Millisecond)
				_, lapsed, err := s.Touch(ctx, "s1", idle)
				if !errors.Is(err, store.ErrNoSession) || !lapsed {
					t.Fatalf("touch after idle = lapsed %v, %v; want lapsed, ErrNoSession", lapsed, err)
				}
				if _, lapsed, err := s.Touch(ctx, "s1", idle); !errors.Is(err, store.ErrNoSession) || lapsed {
					t.Errorf("second touch after idle = lapsed %v, %v; want gone, reported lapsed only once", lapsed, err)
				}
			})
			t.Run("AbsoluteCapNeverExtended", func(t *testing.T) {
				s, now := clockStore(t, b)
				mustRedeem(t, s, "s1", idle)
				for range 3 { // keep it busy: 3 × 9m = 27m
					*now = now.Add(9 * time.Minute)
					if _, _, err := s.Touch(ctx, "s1", idle); err != nil {
						t.Fatalf("touch at %v: %v", now.Sub(t0), err)
					}
				}
				*now = t0.Add(30 * time.Minute)
				if _, lapsed, err := s.Touch(ctx, "s1", idle); !errors.Is(err, store.ErrNoSession) || !lapsed {
					t.Fatalf("touch at the cap = lapsed %v, %v; want ended", lapsed, err)
				}
			})
			t.Run("TTLBackstop", func(t *testing.T) {
				s, _ := clockStore(t, b)
				mustRedeem(t, s, "s1", idle)
				pttl, err := s.Client().PTTL(ctx, s.Key("session", "s1")).Result()
				if err != nil || pttl <= 9*time.Minute || pttl > idle {
					t.Errorf("session PTTL = %v, %v; want about the idle timeout", pttl, err)
				}
			})
			t.Run("EndAndList", func(t *testing.T) {
				s, _ := clockStore(t, b)
				mustRedeem(t, s, "s1", idle)
				other := session("s2")
				other.Actor = audit.Actor{ID: "2002", Email: "grace@example.com"}
				if _, err := s.Reserve(ctx, "jti2", grant, time.Minute, event(audit.Minted, "", "")); err != nil {
					t.Fatal(err)
				}
				if ok, _, err := s.Redeem(ctx, "jti2", other, idle, event(audit.Redeemed, "", ""), rejected); !ok || err != nil {
					t.Fatal(ok, err)
				}
				all, err := s.Sessions(ctx, "")
				if err != nil || len(all) != 2 {
					t.Fatalf("Sessions = %d, %v; want 2", len(all), err)
				}
				mine, err := s.Sessions(ctx, "2002")
				if err != nil || len(mine) != 1 || mine[0].ID != "s2" {
					t.Fatalf("Sessions(2002) = %+v, %v; want s2", mine, err)
				}
				if err := s.EndSession(ctx, other, event(audit.Revoked, "rv", "")); err != nil {
					t.Fatal(err)
				}
				if err := s.EndSession(ctx, other, event(audit.Revoked, "rv2", "")); !errors.Is(err, store.ErrNoSession) {
					t.Errorf("second end = %v, want ErrNoSession", err)
				}
				if _, _, err := s.Touch(ctx, "s2", idle); !errors.Is(err, store.ErrNoSession) {
					t.Errorf("touch after revocation = %v, want ErrNoSession", err)
				}
				all, _ = s.Sessions(ctx, "")
				if len(all) != 1 || all[0].ID != "s1" {
					t.Errorf("Sessions after revocation = %+v, want s1 only", all)
				}
				var revoked int
				for _, e := range events(t, s) {
					if e.Type == audit.Revoked {
						revoked++
					}
				}
				if revoked != 1 {
					t.Errorf("%d session.revoked events, want 1", revoked)
				}
			})
		})
	}
}

func mustRedeem(t *testing.T, s *store.Store, sid string, idle time.Duration) {
	t.Helper()
	ctx := context.Background()
	jti := "jti-" + sid
	if _, err := s.Reserve(ctx, jti, grant, time.Minute, event(audit.Minted, "", "")); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := s.Redeem(ctx, jti, session(sid), idle, event(audit.Redeemed, "", ""), rejected); !ok || err != nil {
		t.Fatalf("Redeem = %v, %v", ok, err)
	}
}
