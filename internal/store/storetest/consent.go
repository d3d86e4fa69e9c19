package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/store"
)

// testConsent: a reservation that requires consent is refused (its denied
// event appended, nothing reserved) until the subject has one, which Redis
// expires at its until; a withdrawal voids the subject's unredeemed tokens
// in its own step, leaves redeemed ones alone, and is ErrNoConsentRecord
// when there is nothing to withdraw.
func testConsent(t *testing.T, b Backend) {
	ctx := context.Background()
	s := b.Open(t)
	withConsent := func(jti string) store.Reservation {
		r := reservation(t, b, jti)
		r.Consent = &store.ConsentCheck{Denied: enc(t, b.Now, audit.Denied, "d-"+jti, "rule consent")}
		return r
	}
	if _, err := s.Reserve(ctx, withConsent("c1")); !errors.Is(err, store.ErrNoConsent) {
		t.Fatalf("reserve without consent = %v, want ErrNoConsent", err)
	}
	if _, st, _ := s.Lookup(ctx, "c1"); st != store.Unknown {
		t.Errorf("refused token id is %v, want unknown", st)
	}
	c := store.Consent{Subject: subject, Until: b.Now().Add(2 * time.Second), Note: "call 17", GrantedAt: b.Now(), GrantedBy: "test"}
	if err := s.GrantConsent(ctx, c, enc(t, b.Now, audit.ConsentGranted, "g1", "")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ConsentOf(ctx, subject); err != nil || got.Note != "call 17" {
		t.Fatalf("ConsentOf = %+v, %v", got, err)
	}
	for _, jti := range []string{"c2", "c3"} {
		if _, err := s.Reserve(ctx, withConsent(jti)); err != nil {
			t.Fatalf("reserve %s with consent: %v", jti, err)
		}
	}
	if ok, _, err := s.Redeem(ctx, redemption(t, b, "c2", "sc2", time.Minute, 10*time.Minute)); err != nil || !ok {
		t.Fatalf("redeem c2: %v %v", ok, err)
	}
	if list, err := s.SubjectSessions(ctx, subject); err != nil || len(list) != 1 || list[0].ID != "sc2" {
		t.Fatalf("SubjectSessions = %+v, %v; want sc2", list, err)
	}
	n, err := s.WithdrawConsent(ctx, subject, enc(t, b.Now, audit.ConsentWithdrawn, "w1", ""))
	if err != nil || n != 1 {
		t.Fatalf("withdraw = %d, %v; want one token voided", n, err)
	}
	if _, st, _ := s.Lookup(ctx, "c3"); st != store.Unknown {
		t.Errorf("unredeemed token after the withdrawal is %v, want unknown", st)
	}
	if _, st, _ := s.Lookup(ctx, "c2"); st != store.Consumed {
		t.Errorf("redeemed token after the withdrawal is %v, want consumed (a replay stays a replay)", st)
	}
	if _, err := s.WithdrawConsent(ctx, subject, enc(t, b.Now, audit.ConsentWithdrawn, "w2", "")); !errors.Is(err, store.ErrNoConsentRecord) {
		t.Errorf("second withdrawal = %v, want ErrNoConsentRecord", err)
	}
	// Ending the session takes it out of the subject's index.
	if err := s.End(ctx, sess(b, "sc2", 10*time.Minute), enc(t, b.Now, audit.Revoked, "rv", ""), lapses(t, b, "sc2")); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.SubjectSessions(ctx, subject); len(list) != 0 {
		t.Errorf("SubjectSessions after the end = %+v, want none", list)
	}
	// Redis expires a consent at its until.
	c.Until = b.Now().Add(time.Second)
	if err := s.GrantConsent(ctx, c, enc(t, b.Now, audit.ConsentGranted, "g2", "")); err != nil {
		t.Fatal(err)
	}
	b.Wait(1500 * time.Millisecond)
	if ok, err := s.ConsentActive(ctx, subject); err != nil || ok {
		t.Errorf("consent past its until: active %v, %v", ok, err)
	}
	want := []string{"d-c1", "g1", "m-c2", "m-c3", "r-sc2", "w1", "rv", "g2"}
	if got := events(t, s); !equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
