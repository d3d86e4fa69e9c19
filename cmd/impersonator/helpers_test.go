package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// redeemVia mints a token as the Forest action would (same keys, same
// Redis) and redeems it at base's login endpoint; it returns the cookie.
func redeemVia(t *testing.T, srv *redistest.Server, keysDir, base string) *http.Cookie {
	t.Helper()
	keys, err := token.LoadDir(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	c := token.Claims{Act: token.Actor{Sub: "1001", Email: "ada@example.com"}, Collection: "users"}
	c.Subject = "42"
	raw, issued, err := token.NewIssuer(keys, "http://localhost:8080", "http://localhost:3000", time.Now).Issue(token.Impersonation, c, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	actor := audit.Actor{ID: "1001", Email: "ada@example.com"}
	subject := audit.Subject{Collection: "users", ID: "42"}
	st := store.New(srv.Client(t), store.Options{})
	g := store.Grant{Actor: actor, Subject: subject, Reason: "ticket 1234", ExpiresAt: issued.ExpiresAt.Time}
	if _, err := st.Reserve(context.Background(), issued.ID, g, time.Minute, audit.Event{Type: audit.Minted, Actor: actor, Subject: subject, TokenID: issued.ID}); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"token": raw})
	res, err := http.Post(base+"/impersonation/login", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("login: %d", res.StatusCode)
	}
	for _, ck := range res.Cookies() {
		if strings.HasSuffix(ck.Name, "impersonation_session") {
			return ck
		}
	}
	t.Fatal("no session cookie")
	return nil
}
