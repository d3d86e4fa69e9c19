package token_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/token"
)

const (
	iss = "https://impersonator.example.com"
	aud = "https://app.example.com"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

func keyset(t testing.TB, alg string) *token.Keyset {
	t.Helper()
	dir := t.TempDir()
	if _, err := token.WriteNew(dir, alg, t0); err != nil {
		t.Fatal(err)
	}
	ks, err := token.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func claims() token.Claims {
	return token.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "42"},
		Act:              token.Actor{Sub: "1001", Email: "ada@example.com"},
		Collection:       "users",
	}
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	for _, alg := range []string{token.AlgEdDSA, token.AlgES256} {
		t.Run(alg, func(t *testing.T) {
			ks := keyset(t, alg)
			is := token.NewIssuer(ks, iss, aud, clock(t0))
			raw, issued, err := is.Issue(token.Impersonation, claims(), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			hdr := header(t, raw)
			if hdr["alg"] != alg || hdr["typ"] != "impersonation+jwt" || hdr["kid"] != ks.Signer().ID {
				t.Errorf("header = %v, want alg %s, typ impersonation+jwt, kid %s", hdr, alg, ks.Signer().ID)
			}
			v := token.NewVerifier(ks, iss, aud, clock(t0.Add(30*time.Second)))
			got, err := v.Verify(token.Impersonation, raw)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Subject != "42" || got.Act.Sub != "1001" || got.Collection != "users" || got.ID != issued.ID {
				t.Errorf("claims = %+v", got)
			}
			if got.ExpiresAt.Sub(got.IssuedAt.Time) != time.Minute {
				t.Errorf("lifetime = %v, want 1m", got.ExpiresAt.Sub(got.IssuedAt.Time))
			}
			if raw, err := base64.RawURLEncoding.DecodeString(got.ID); err != nil || len(raw) < 16 {
				t.Errorf("jti %q has fewer than 128 bits", got.ID)
			}
		})
	}
}

func TestIssueRefusesOverlongLifetime(t *testing.T) {
	is := token.NewIssuer(keyset(t, token.AlgEdDSA), iss, aud, clock(t0))
	if _, _, err := is.Issue(token.Impersonation, claims(), 6*time.Minute); err == nil {
		t.Error("issued an impersonation token living 6m, over the 5m cap")
	}
}

func TestSessionKindRoundTrip(t *testing.T) {
	ks := keyset(t, token.AlgEdDSA)
	c := claims()
	c.SID = "sess-1"
	raw, _, err := token.NewIssuer(ks, iss, aud, clock(t0)).Issue(token.Session, c, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v := token.NewVerifier(ks, iss, aud, clock(t0))
	if _, err := v.Verify(token.Session, raw); err != nil {
		t.Fatalf("session token: %v", err)
	}
	if _, err := v.Verify(token.Impersonation, raw); !errors.Is(err, token.ErrType) {
		t.Errorf("session token verified as impersonation token: %v", err)
	}
}

// The attack table: every token here must be rejected, with the cause named.
func TestVerifyRejectsAttacks(t *testing.T) {
	ks := keyset(t, token.AlgEdDSA)
	ecKS := keyset(t, token.AlgES256)
	is := token.NewIssuer(ks, iss, aud, clock(t0))
	good, _, err := is.Issue(token.Impersonation, claims(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	signer := ks.Signer()
	pub := signer.Public().(ed25519.PublicKey)
	otherKey := keyset(t, token.AlgEdDSA).Signer()

	// sign builds a token from raw header and claims maps with key k.
	sign := func(hdr, cl map[string]any, method jwt.SigningMethod, k any) string {
		t.Helper()
		tok := jwt.NewWithClaims(method, jwt.MapClaims(cl))
		for h, v := range hdr {
			tok.Header[h] = v
		}
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	baseHdr := func() map[string]any {
		return map[string]any{"typ": "impersonation+jwt", "kid": signer.ID}
	}
	baseClaims := func() map[string]any {
		return map[string]any{
			"iss": iss, "aud": aud, "sub": "42", "collection": "users",
			"act": map[string]any{"sub": "1001", "email": "ada@example.com"},
			"jti": token.NewJTI(), "iat": t0.Unix(), "exp": t0.Add(time.Minute).Unix(),
		}
	}
	priv := privateOf(t, ks)
	with := func(mut func(h, c map[string]any)) string {
		h, c := baseHdr(), baseClaims()
		mut(h, c)
		return sign(h, c, jwt.SigningMethodEdDSA, priv)
	}
	parts := strings.Split(good, ".")

	cases := []struct {
		name string
		raw  string
		want error
	}{
		{"alg none", unsigned(t, map[string]any{"alg": "none", "typ": "impersonation+jwt", "kid": signer.ID}, baseClaims()), token.ErrAlgorithm},
		{"HS256 with the public key bytes as secret", sign(baseHdr(), baseClaims(), jwt.SigningMethodHS256, []byte(pub)), token.ErrAlgorithm},
		{"HS256 with the JWKS as secret", sign(baseHdr(), baseClaims(), jwt.SigningMethodHS256, ks.JWKS()), token.ErrAlgorithm},
		{"ES256 header on an EdDSA key id", withAlg(t, good, "ES256"), token.ErrAlgorithm},
		{"unknown kid", with(func(h, _ map[string]any) { h["kid"] = "no-such-key" }), token.ErrUnknownKey},
		{"path-like kid", with(func(h, _ map[string]any) { h["kid"] = "../../etc/passwd" }), token.ErrUnknownKey},
		{"missing kid", with(func(h, _ map[string]any) { delete(h, "kid") }), token.ErrUnknownKey},
		{"signed by a key not in the keyset, its own kid", sign(map[string]any{"typ": "impersonation+jwt", "kid": otherKey.ID}, baseClaims(), jwt.SigningMethodEdDSA, privateOfKey(t, otherKey)), token.ErrUnknownKey},
		{"signed by another key, our kid", sign(baseHdr(), baseClaims(), jwt.SigningMethodEdDSA, privateOfKey(t, otherKey)), token.ErrSignature},
		{"altered payload", parts[0] + "." + encodeJSON(t, mutate(t, parts[1], "sub", "1")) + "." + parts[2], token.ErrSignature},
		{"altered header", encodeJSON(t, mutate(t, parts[0], "extra", "x")) + "." + parts[1] + "." + parts[2], token.ErrSignature},
		{"truncated signature", parts[0] + "." + parts[1] + "." + parts[2][:20], token.ErrSignature},
		{"non-canonical base64 in signature", parts[0] + "." + parts[1] + "." + flipLastBits(parts[2]), token.ErrMalformed},
		// Other spellings of the same bytes (issue 18): each decodes, by
		// some decoder, to the signature of the good token.
		{"padded signature", parts[0] + "." + parts[1] + "." + parts[2] + "==", token.ErrMalformed},
		{"newline inside the signature", parts[0] + "." + parts[1] + "." + parts[2][:40] + "\n" + parts[2][40:], token.ErrMalformed},
		{"carriage return inside the signature", parts[0] + "." + parts[1] + "." + parts[2][:40] + "\r" + parts[2][40:], token.ErrMalformed},
		{"newline at the end", good + "\n", token.ErrMalformed},
		{"standard alphabet", stdAlphabet(good), token.ErrMalformed},
		{"jku header", with(func(h, _ map[string]any) { h["jku"] = "https://evil.example/jwks.json" }), token.ErrHeader},
		{"x5u header", with(func(h, _ map[string]any) { h["x5u"] = "https://evil.example/cert" }), token.ErrHeader},
		{"embedded jwk header", with(func(h, _ map[string]any) { h["jwk"] = map[string]any{"kty": "OKP"} }), token.ErrHeader},
		{"x5c header", with(func(h, _ map[string]any) { h["x5c"] = []string{"MIIB"} }), token.ErrHeader},
		{"crit header", with(func(h, _ map[string]any) { h["crit"] = []string{"exp"} }), token.ErrHeader},
		{"missing typ", with(func(h, _ map[string]any) { delete(h, "typ") }), token.ErrType},
		{"typ JWT", with(func(h, _ map[string]any) { h["typ"] = "JWT" }), token.ErrType},
		{"session token as impersonation token", with(func(h, c map[string]any) { h["typ"] = "impersonation-session+jwt"; c["sid"] = "s1" }), token.ErrType},
		{"wrong iss", with(func(_, c map[string]any) { c["iss"] = "https://evil.example" }), token.ErrIssuer},
		{"missing iss", with(func(_, c map[string]any) { delete(c, "iss") }), token.ErrClaims},
		{"wrong aud", with(func(_, c map[string]any) { c["aud"] = "https://other-app.example" }), token.ErrAudience},
		{"missing aud", with(func(_, c map[string]any) { delete(c, "aud") }), token.ErrClaims},
		{"expired", with(func(_, c map[string]any) {
			c["iat"] = t0.Add(-2 * time.Minute).Unix()
			c["exp"] = t0.Add(-time.Minute).Unix()
		}), token.ErrExpired},
		{"missing exp", with(func(_, c map[string]any) { delete(c, "exp") }), token.ErrClaims},
		{"nbf in the future", with(func(_, c map[string]any) { c["nbf"] = t0.Add(time.Minute).Unix() }), token.ErrNotYet},
		{"iat in the future", with(func(_, c map[string]any) {
			c["iat"] = t0.Add(time.Minute).Unix()
			c["exp"] = t0.Add(2 * time.Minute).Unix()
		}), token.ErrNotYet},
		{"missing iat", with(func(_, c map[string]any) { delete(c, "iat") }), token.ErrClaims},
		{"lifetime over 5m", with(func(_, c map[string]any) { c["exp"] = t0.Add(time.Hour).Unix() }), token.ErrClaims},
		{"missing jti", with(func(_, c map[string]any) { delete(c, "jti") }), token.ErrClaims},
		{"short jti", with(func(_, c map[string]any) { c["jti"] = "abc" }), token.ErrClaims},
		{"missing sub", with(func(_, c map[string]any) { delete(c, "sub") }), token.ErrClaims},
		{"missing act", with(func(_, c map[string]any) { delete(c, "act") }), token.ErrClaims},
		{"missing collection", with(func(_, c map[string]any) { delete(c, "collection") }), token.ErrClaims},
		{"numeric sub", with(func(_, c map[string]any) { c["sub"] = 42 }), token.ErrMalformed},
		{"oversized", good + strings.Repeat("A", token.MaxTokenBytes), token.ErrTooLarge},
		{"empty", "", token.ErrMalformed},
		{"two segments", parts[0] + "." + parts[1], token.ErrMalformed},
		{"four segments", good + ".x", token.ErrMalformed},
		{"garbage", "not.a.token", token.ErrMalformed},
		{"JSON instead of JWT", `{"alg":"none"}`, token.ErrMalformed},
		{"ES256 high-s twin of a valid token", highS(t, ecKS), token.ErrSignature},
	}
	v := token.NewVerifier(ks, iss, aud, clock(t0))
	// The same table runs against the verifier of an app that holds only
	// the JWKS (the appsession package's).
	fromJWKS := func(ks *token.Keyset) *token.PublicKeys {
		pk, err := token.ParseJWKS(ks.JWKS())
		if err != nil {
			t.Fatal(err)
		}
		return pk
	}
	pk, ecPK := fromJWKS(ks), fromJWKS(ecKS)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			verifier, keys := v, pk
			if strings.HasPrefix(tc.name, "ES256 high-s") {
				verifier, keys = token.NewVerifier(ecKS, iss, aud, clock(t0)), ecPK
			}
			c, err := verifier.Verify(token.Impersonation, tc.raw)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("rejected with %v, want cause %v", err, tc.want)
			}
			c, err = keys.Verify(token.Impersonation, tc.raw, iss, aud, t0)
			if err == nil {
				t.Fatalf("accepted by the JWKS verifier: %+v", c)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("JWKS verifier: rejected with %v, want cause %v", err, tc.want)
			}
		})
	}
	// The control: the untouched token verifies, so the table tests the
	// attacks and not a broken verifier.
	if _, err := v.Verify(token.Impersonation, good); err != nil {
		t.Fatalf("control token rejected: %v", err)
	}
	if _, err := pk.Verify(token.Impersonation, good, iss, aud, t0); err != nil {
		t.Fatalf("control token rejected by the JWKS verifier: %v", err)
	}
}

func TestKeysetLoadAndRotate(t *testing.T) {
	dir := t.TempDir()
	old, err := token.WriteNew(dir, token.AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, old.File))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, want 0600", info.Mode().Perm())
	}
	ks, err := token.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := token.NewIssuer(ks, iss, aud, clock(t0)).Issue(token.Impersonation, claims(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	newer, err := token.WriteNew(dir, token.AlgES256, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ks, err = token.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Signer().ID != newer.ID {
		t.Errorf("signer = %s, want the newest key %s", ks.Signer().ID, newer.ID)
	}
	// A token signed by the old key still verifies after rotation.
	if _, err := token.NewVerifier(ks, iss, aud, clock(t0)).Verify(token.Impersonation, raw); err != nil {
		t.Errorf("old key's token after rotation: %v", err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(ks.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 {
		t.Fatalf("JWKS has %d keys, want 2", len(set.Keys))
	}
	for _, k := range set.Keys {
		if _, ok := k["d"]; ok {
			t.Errorf("JWKS publishes private member d: %v", k)
		}
		if k["use"] != "sig" || k["kid"] == "" || (k["alg"] != "EdDSA" && k["alg"] != "ES256") {
			t.Errorf("JWKS key lacks kid/alg/use: %v", k)
		}
	}
}

func TestKeysetRefusesLooseFiles(t *testing.T) {
	dir := t.TempDir()
	k, err := token.WriteNew(dir, token.AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, k.File), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := token.LoadDir(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("LoadDir of a world-readable key = %v, want a mode error", err)
	}
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "x.pem"), []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := token.LoadDir(bad); err == nil {
		t.Error("LoadDir accepted a file that is not PEM")
	}
	rsaLike := t.TempDir()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(p384)
	writePEM(t, filepath.Join(rsaLike, "p384.pem"), der)
	if _, err := token.LoadDir(rsaLike); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("LoadDir of a P-384 key = %v, want a curve error", err)
	}
}

// RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
func TestThumbprintRFC8037(t *testing.T) {
	x, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	got, err := token.Thumbprint(ed25519.PublicKey(x))
	if err != nil {
		t.Fatal(err)
	}
	if want := "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Errorf("thumbprint = %s, want %s", got, want)
	}
}

func FuzzVerify(f *testing.F) {
	ks := keyset(f, token.AlgEdDSA)
	good, _, err := token.NewIssuer(ks, iss, aud, clock(t0)).Issue(token.Impersonation, claims(), time.Minute)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("")
	f.Add("a.b.c")
	v := token.NewVerifier(ks, iss, aud, clock(t0))
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := v.Verify(token.Impersonation, raw)
		if err != nil {
			return
		}
		// Anything accepted must be exactly what we signed: a valid
		// signature from our key over well-formed claims.
		if raw != good {
			t.Fatalf("accepted a token that was never issued: %q (%+v)", raw, c)
		}
	})
}

// helpers

func header(t *testing.T, raw string) map[string]any {
	t.Helper()
	var h map[string]any
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func encodeJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func unsigned(t *testing.T, hdr, cl map[string]any) string {
	return encodeJSON(t, hdr) + "." + encodeJSON(t, cl) + "."
}

func mutate(t *testing.T, seg, k string, v any) map[string]any {
	t.Helper()
	var m map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(seg)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m[k] = v
	return m
}

func withAlg(t *testing.T, raw, alg string) string {
	parts := strings.Split(raw, ".")
	return encodeJSON(t, mutate(t, parts[0], "alg", alg)) + "." + parts[1] + "." + parts[2]
}

// flipLastBits changes the unused low bits of the last base64 character, so
// the segment decodes to the same bytes only under lenient decoding.
func flipLastBits(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[last^1])
}

// stdAlphabet respells a token in the standard base64 alphabet ("+" and
// "/" for "-" and "_"), plus a "+" that a lenient decoder would accept.
func stdAlphabet(raw string) string {
	s := strings.NewReplacer("-", "+", "_", "/").Replace(raw)
	if s == raw {
		i := strings.LastIndexByte(s, '.')
		s = s[:i+1] + "+" + s[i+2:] // the first signature character, re-spelled
	}
	return s
}

func privateOf(t *testing.T, ks *token.Keyset) any { return privateOfKey(t, ks.Signer()) }

// privateOfKey reads a key's private half back from its PEM through the
// exported Signer interface of the key (test-only access).
func privateOfKey(t testing.TB, k *token.Key) any {
	t.Helper()
	p, ok := token.PrivateForTest(k)
	if !ok {
		t.Fatal("no private key")
	}
	return p
}

func writePEM(t *testing.T, path string, der []byte) {
	t.Helper()
	pemBytes := "-----BEGIN PRIVATE KEY-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END PRIVATE KEY-----\n"
	if err := os.WriteFile(path, []byte(pemBytes), 0o600); err != nil {
		t.Fatal(err)
	}
}

// highS issues a valid ES256 token and returns its twin with s replaced by
// N-s: an equally valid ECDSA signature that must still be refused.
func highS(t *testing.T, ks *token.Keyset) string {
	t.Helper()
	raw, _, err := token.NewIssuer(ks, iss, aud, clock(t0)).Issue(token.Impersonation, claims(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := token.NewVerifier(ks, iss, aud, clock(t0)).Verify(token.Impersonation, raw); err != nil {
		t.Fatalf("low-s original rejected: %v", err)
	}
	i := strings.LastIndexByte(raw, '.')
	sig, _ := base64.RawURLEncoding.DecodeString(raw[i+1:])
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	s.FillBytes(sig[32:])
	return raw[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

func TestKeysetSign(t *testing.T) {
	for _, alg := range []string{token.AlgEdDSA, token.AlgES256} {
		ks := keyset(t, alg)
		kid, sig, err := ks.Sign([]byte("checkpoint"))
		if err != nil || kid != ks.Signer().ID {
			t.Fatalf("%s: Sign = %s, %v", alg, kid, err)
		}
		if err := ks.VerifySignature(kid, []byte("checkpoint"), sig); err != nil {
			t.Errorf("%s: own signature: %v", alg, err)
		}
		if err := ks.VerifySignature(kid, []byte("checkpoinT"), sig); err == nil {
			t.Errorf("%s: signature verified over another message", alg)
		}
		if err := ks.VerifySignature("other", []byte("checkpoint"), sig); err == nil {
			t.Errorf("%s: signature verified with an unknown kid", alg)
		}
	}
}

// TestIssueIsGolangJWTs: Issue writes the header segment it caches, yet
// every token is what golang-jwt's NewWithClaims and SignedString write for
// the same claims: byte for byte with Ed25519 (deterministic), the signed
// input with ES256 (whose signatures are random), for both kinds and after
// the cache is warm.
func TestIssueIsGolangJWTs(t *testing.T) {
	for _, alg := range []string{token.AlgEdDSA, token.AlgES256} {
		key, err := token.Generate(alg)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := token.NewKeyset(key)
		if err != nil {
			t.Fatal(err)
		}
		priv, _ := token.PrivateForTest(key)
		at := time.Unix(1_800_000_000, 0)
		is := token.NewIssuer(ks, "https://imp.test", "https://app.test", func() time.Time { return at })
		for _, k := range []token.Kind{token.Impersonation, token.Session, token.Impersonation} {
			c := token.Claims{Act: token.Actor{Sub: "1001", Email: "ada@example.com"}, Collection: "users", SID: "s", Scope: token.ScopeRead}
			c.Subject = "42"
			raw, issued, err := is.Issue(k, c, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			method := jwt.SigningMethod(jwt.SigningMethodEdDSA)
			if alg == token.AlgES256 {
				method = jwt.SigningMethodES256
			}
			want := jwt.NewWithClaims(method, issued)
			want.Header["typ"] = k.Typ()
			want.Header["kid"] = key.ID
			if alg == token.AlgEdDSA {
				s, err := want.SignedString(priv)
				if err != nil || s != raw {
					t.Errorf("%s %s:\n got %s\nwant %s (%v)", alg, k.Typ(), raw, s, err)
				}
				continue
			}
			input, err := want.SigningString()
			if err != nil || !strings.HasPrefix(raw, input+".") {
				t.Errorf("%s %s: signed input\n got %s\nwant %s (%v)", alg, k.Typ(), raw, input, err)
			}
		}
	}
}
