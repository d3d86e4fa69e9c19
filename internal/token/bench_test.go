package token_test

import (
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/token"
)

// BenchmarkVerify verifies one impersonation token (EdDSA) with every check.
func BenchmarkVerify(b *testing.B) {
	ks := keyset(b, token.AlgEdDSA)
	raw, _, err := token.NewIssuer(ks, iss, aud, clock(t0)).Issue(token.Impersonation, claims(), time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	v := token.NewVerifier(ks, iss, aud, clock(t0))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(token.Impersonation, raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFloorVerify is the floor of Verify: one bare Ed25519 signature
// check over a signing input of the same length.
func BenchmarkFloorVerify(b *testing.B) {
	ks := keyset(b, token.AlgEdDSA)
	raw, _, err := token.NewIssuer(ks, iss, aud, clock(t0)).Issue(token.Impersonation, claims(), time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	priv := privateOfKey(b, ks.Signer()).(ed25519.PrivateKey)
	msg := []byte(raw[:strings.LastIndexByte(raw, '.')])
	sig := ed25519.Sign(priv, msg)
	pub := priv.Public().(ed25519.PublicKey)
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("bad signature")
		}
	}
}

// BenchmarkIssue signs one impersonation token.
func BenchmarkIssue(b *testing.B) {
	is := token.NewIssuer(keyset(b, token.AlgEdDSA), iss, aud, clock(t0))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := is.Issue(token.Impersonation, claims(), time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFloorIssue is the floor of Issue: one bare Ed25519 signature over
// a message of a token's length.
func BenchmarkFloorIssue(b *testing.B) {
	priv := privateOfKey(b, keyset(b, token.AlgEdDSA).Signer()).(ed25519.PrivateKey)
	msg := []byte(strings.Repeat("x", 300))
	b.ReportAllocs()
	for b.Loop() {
		ed25519.Sign(priv, msg)
	}
}
