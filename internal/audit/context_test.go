package audit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
)

// TestContext: an event encoded from a token's claims, with its context
// replaced by a grant's (as the redeem script does), is byte for byte the
// event encoded with the grant's actor, requester, subject and reason.
func TestContext(t *testing.T) {
	enc := audit.Encoder{Now: func() time.Time { return t0 }}
	claims := audit.Event{ID: "evt_1", Type: audit.Redeemed, Actor: audit.Actor{ID: "1001", Email: "ada@example.com"},
		Subject: audit.Subject{Collection: "users", ID: "42"}, TokenID: "jti", SessionID: "sid", IP: "192.0.2.1",
		UserAgent: `"actor":{"id":"1001","email":"ada@example.com"}`, Detail: "webhook credential"}
	long := strings.Repeat("é", 400)
	for name, g := range map[string]audit.Event{
		"team and role": {Actor: audit.Actor{ID: "1001", Email: "ada@example.com", Team: "Support", Role: "Admin"},
			Subject: claims.Subject, Reason: "ticket 1234"},
		"requester": {Actor: audit.Actor{ID: "1001", Email: "ada@example.com"}, Requester: &audit.Actor{ID: "7", Email: "Grace@Example.com"},
			Subject: claims.Subject, Reason: `<script>&"quoted"` + "\u2028"},
		"no reason":       {Actor: claims.Actor, Subject: claims.Subject},
		"capped fields":   {Actor: audit.Actor{ID: "1001", Email: long, Team: long}, Subject: claims.Subject, Reason: strings.Repeat("x", 2000)},
		"odd index names": {Actor: audit.Actor{ID: "10 01", Email: "A\tB@example.com"}, Subject: audit.Subject{Collection: "us ers", ID: "4\n2"}},
	} {
		t.Run(name, func(t *testing.T) {
			from, _ := audit.Context(claims)
			to, idx := audit.Context(g)
			c, err := enc.Encode(claims)
			if err != nil {
				t.Fatal(err)
			}
			i := strings.Index(string(c.JSON), from)
			if i < 0 {
				t.Fatalf("%s does not hold its context %s", c.JSON, from)
			}
			spliced := string(c.JSON[:i]) + to + string(c.JSON[i+len(from):])
			want := claims
			want.Actor, want.Requester, want.Subject, want.Reason = g.Actor, g.Requester, g.Subject, g.Reason
			w, err := enc.Encode(want)
			if err != nil {
				t.Fatal(err)
			}
			if spliced != string(w.JSON) {
				t.Errorf("spliced:\n%s\nencoded with the grant's context:\n%s", spliced, w.JSON)
			}
			if got := strings.Join(w.Indexes, " "); idx != got {
				t.Errorf("indexes = %q, want %q", idx, got)
			}
		})
	}
}
