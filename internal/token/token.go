// Package token issues and verifies the service's JWTs (impersonation tokens
// and session tokens) and holds the keys that sign them.
package token

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Kind tells an impersonation token from a session token. Each has its own
// JWT "typ"; a token of one kind never verifies as the other.
type Kind int

const (
	// Impersonation is the short-lived, single-use token minted for the
	// admin panel and redeemed at the login endpoint.
	Impersonation Kind = iota + 1
	// Session is the session cookie's value.
	Session
)

// Typ returns the JWT "typ" header value of k.
func (k Kind) Typ() string {
	switch k {
	case Impersonation:
		return "impersonation+jwt"
	case Session:
		return "impersonation-session+jwt"
	}
	return "invalid"
}

func (k Kind) String() string { return k.Typ() }

// Limits of what the verifier reads at all.
const (
	MaxTokenBytes = 4096
	// MaxImpersonationTTL caps IMPERSONATOR_TOKEN_TTL (DESIGN.md 3.1).
	MaxImpersonationTTL = 5 * time.Minute
	// MaxSessionTTL caps the lifetime a session token may claim.
	MaxSessionTTL = 24 * time.Hour
	// Leeway tolerates small clock differences between instances.
	Leeway = 5 * time.Second
	// minJTIBytes is 128 bits.
	minJTIBytes = 16
)

// Actor is the RFC 8693 "act" claim: the admin acting as the subject.
type Actor struct {
	Sub   string `json:"sub"`
	Email string `json:"email,omitempty"`
}

// The scopes of an impersonation (the claim "scope").
const (
	ScopeRead = "read" // the customer app refuses writes
	ScopeFull = "full"
)

// Claims are the claims of both kinds of token.
type Claims struct {
	jwt.RegisteredClaims
	Act        Actor  `json:"act"`
	Collection string `json:"collection,omitempty"`
	SID        string `json:"sid,omitempty"`
	// Scope is the impersonation's access: ScopeRead or ScopeFull, in both
	// kinds of token. Absent in tokens issued before scopes: full.
	Scope string `json:"scope,omitempty"`

	kind   Kind          // set by Issue and Verify, not a claim
	maxTTL time.Duration // likewise
}

// Validate runs after golang-jwt's own checks of exp, iat, nbf, iss and aud:
// it requires what golang-jwt leaves optional.
func (c *Claims) Validate() error {
	switch {
	case c.Subject == "":
		return errors.New("missing sub")
	case c.Act.Sub == "":
		return errors.New("missing act.sub")
	case c.IssuedAt == nil:
		return errors.New("missing iat")
	case c.ExpiresAt == nil:
		return errors.New("missing exp")
	case c.ExpiresAt.Sub(c.IssuedAt.Time) > c.maxTTL:
		return fmt.Errorf("lifetime %s exceeds %s", c.ExpiresAt.Sub(c.IssuedAt.Time), c.maxTTL)
	case !c.ExpiresAt.After(c.IssuedAt.Time):
		return errors.New("exp not after iat")
	}
	if c.Scope != "" && c.Scope != ScopeRead && c.Scope != ScopeFull {
		return fmt.Errorf("scope %q is neither %s nor %s", c.Scope, ScopeRead, ScopeFull)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(c.ID); err != nil || len(raw) < minJTIBytes {
		return errors.New("missing or short jti")
	}
	switch c.kind {
	case Impersonation:
		if c.Collection == "" {
			return errors.New("missing collection")
		}
	case Session:
		if c.SID == "" {
			return errors.New("missing sid")
		}
	}
	return nil
}

// NewJTI returns 128 random bits, base64url without padding.
func NewJTI() string {
	var b [minJTIBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Issuer signs tokens with the keyset's signing key at the issuer's clock.
type Issuer struct {
	keys     *Keyset
	issuer   string
	audience string
	now      func() time.Time
}

// NewIssuer returns an issuer for iss and aud; now is the clock.
func NewIssuer(keys *Keyset, iss, aud string, now func() time.Time) *Issuer {
	return &Issuer{keys: keys, issuer: iss, audience: aud, now: now}
}

// Issue signs a token of kind k for subject sub and actor act, valid for ttl.
// It fills iss, aud, iat, exp and, when empty, jti, and returns the signed
// token with its claims.
func (is *Issuer) Issue(k Kind, c Claims, ttl time.Duration) (string, *Claims, error) {
	exact := is.now() // picks the key: a key signs from its activation, not the second after
	now := exact.Truncate(time.Second)
	c.Issuer = is.issuer
	c.Audience = jwt.ClaimStrings{is.audience}
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	c.NotBefore = nil
	if c.ID == "" {
		c.ID = NewJTI()
	}
	c.kind, c.maxTTL = k, maxTTL(k)
	if err := c.Validate(); err != nil {
		return "", nil, fmt.Errorf("token: refusing to issue: %w", err)
	}
	key := is.keys.signerAt(exact)
	if key == nil {
		return "", nil, fmt.Errorf("token: refusing to issue: %w: every key is retired", ErrNoKeys)
	}
	// What golang-jwt's SignedString does, with the header segment (the
	// same for every token of a key and kind) encoded once.
	payload, err := json.Marshal(&c)
	if err != nil {
		return "", nil, err
	}
	method := signingMethod(key.Alg)
	input := headerSegment(method, key.ID, k.Typ()) + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := method.Sign(input, key.private)
	if err != nil {
		return "", nil, err
	}
	signed := input + "." + base64.RawURLEncoding.EncodeToString(sig)
	if key.Alg == AlgES256 {
		signed, err = lowS(signed)
	}
	return signed, &c, err
}

// headerSegments caches each key and kind's encoded JWT header: two per
// key ever loaded.
var headerSegments sync.Map // "alg kid typ" -> segment

// headerSegment is the encoded header golang-jwt's NewWithClaims would
// write for method, kid and typ: {"alg","kid","typ"}, as encoding/json
// writes the map (keys sorted).
func headerSegment(method jwt.SigningMethod, kid, typ string) string {
	name := method.Alg() + " " + kid + " " + typ
	if seg, ok := headerSegments.Load(name); ok {
		return seg.(string)
	}
	h, _ := json.Marshal(map[string]any{"alg": method.Alg(), "kid": kid, "typ": typ}) // strings always marshal
	seg := base64.RawURLEncoding.EncodeToString(h)
	headerSegments.Store(name, seg)
	return seg
}

func maxTTL(k Kind) time.Duration {
	if k == Session {
		return MaxSessionTTL
	}
	return MaxImpersonationTTL
}

func signingMethod(alg string) jwt.SigningMethod {
	if alg == AlgES256 {
		return jwt.SigningMethodES256
	}
	return jwt.SigningMethodEdDSA
}

// Verifier checks tokens strictly: allowlisted algorithm of the key named by
// kid, typ of the expected kind, iss, aud, exp, iat, jti and lifetime. The
// key must verify at the verifier's clock (not dropped); a kid the keyset
// does not hold triggers one rate-limited reload of the keys folder (see
// UnknownKeyReloadInterval) before the token is refused.
type Verifier struct {
	keys     *Keyset
	issuer   string
	audience string
	now      func() time.Time
}

// NewVerifier returns a verifier for tokens issued by iss for aud.
func NewVerifier(keys *Keyset, iss, aud string, now func() time.Time) *Verifier {
	return &Verifier{keys: keys, issuer: iss, audience: aud, now: now}
}

// Causes of rejection, for the audit log. Callers never show them to a
// client.
var (
	ErrMalformed  = errors.New("malformed token")
	ErrTooLarge   = errors.New("token too large")
	ErrHeader     = errors.New("forbidden or missing header")
	ErrType       = errors.New("wrong token type")
	ErrUnknownKey = errors.New("unknown key")
	ErrAlgorithm  = errors.New("algorithm not allowed")
	ErrSignature  = errors.New("bad signature")
	ErrExpired    = errors.New("expired")
	ErrNotYet     = errors.New("not valid yet")
	ErrIssuer     = errors.New("wrong issuer")
	ErrAudience   = errors.New("wrong audience")
	ErrClaims     = errors.New("invalid claims")
)

// forbiddenHeaders would let a token choose its own key or add semantics
// this verifier does not implement.
var forbiddenHeaders = []string{"crit", "jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256"}

// Verify checks raw as a token of kind k and returns its claims. The error
// wraps one of the Err* causes.
func (v *Verifier) Verify(k Kind, raw string) (*Claims, error) {
	now := v.now()
	return verify(k, raw, v.issuer, v.audience, now, func(kid string) (string, crypto.PublicKey, bool) {
		key, ok := v.keys.cur.Load().lookup(kid, now)
		if !ok && v.keys.reloadForKid(kid) {
			// Another instance may sign with a key this one has not
			// loaded yet.
			key, ok = v.keys.cur.Load().lookup(kid, now)
		}
		if !ok {
			return "", nil, false
		}
		return key.Alg, key.Public(), true
	})
}

// keyLookup returns the algorithm and public key named by kid.
type keyLookup func(kid string) (alg string, pub crypto.PublicKey, ok bool)

// verify is every check of Verify, with the keys found by lookup: the
// service's own keyset, or a JWKS (PublicKeys.Verify).
func verify(k Kind, raw, iss, aud string, now time.Time, lookup keyLookup) (*Claims, error) {
	if len(raw) > MaxTokenBytes {
		return nil, ErrTooLarge
	}
	if err := CheckCompact(raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	c := &Claims{kind: k, maxTTL: maxTTL(k)}
	var cause error
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{AlgEdDSA, AlgES256}),
		jwt.WithIssuer(iss),
		jwt.WithAudience(aud),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	_, err := p.ParseWithClaims(raw, c, func(t *jwt.Token) (any, error) {
		for _, h := range forbiddenHeaders {
			if _, ok := t.Header[h]; ok {
				cause = fmt.Errorf("%w: %s", ErrHeader, h)
				return nil, cause
			}
		}
		if typ, _ := t.Header["typ"].(string); typ != k.Typ() {
			cause = fmt.Errorf("%w: %q", ErrType, t.Header["typ"])
			return nil, cause
		}
		kid, _ := t.Header["kid"].(string)
		alg, pub, ok := lookup(kid)
		if !ok {
			cause = fmt.Errorf("%w: %q", ErrUnknownKey, kid)
			return nil, cause
		}
		if t.Method.Alg() != alg {
			cause = fmt.Errorf("%w: %s for a %s key", ErrAlgorithm, t.Method.Alg(), alg)
			return nil, cause
		}
		if alg == AlgES256 && !isLowS(t.Signature) {
			cause = fmt.Errorf("%w: non-canonical ECDSA signature", ErrSignature)
			return nil, cause
		}
		return pub, nil
	})
	if err == nil {
		return c, nil
	}
	if cause != nil {
		return nil, cause
	}
	return nil, classify(err)
}

// CheckCompact reports whether raw is spelled as a JWT's one canonical
// compact form: three segments of the base64url alphabet, no padding, no
// white space. golang-jwt's strict decoding (WithStrictDecoding, used with
// it by every parser of the service) refuses non-zero unused low bits, but
// Go's base64 decoders skip CR and LF even then, so a signature with a line
// break in it would decode to the same bytes: another spelling of one
// token. Together, a token has exactly one text that verifies.
func CheckCompact(raw string) error {
	if strings.Count(raw, ".") != 2 {
		return errors.New("not three segments")
	}
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return fmt.Errorf("byte %#x at %d is outside the base64url alphabet", c, i)
		}
	}
	return nil
}

func classify(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && strings.Contains(err.Error(), "signing method"):
		// golang-jwt reports a method outside WithValidMethods this way.
		return fmt.Errorf("%w: %v", ErrAlgorithm, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return fmt.Errorf("%w: %v", ErrSignature, err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return fmt.Errorf("%w: %v", ErrAlgorithm, err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return fmt.Errorf("%w: %v", ErrExpired, err)
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return fmt.Errorf("%w: %v", ErrNotYet, err)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return fmt.Errorf("%w: %v", ErrIssuer, err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return fmt.Errorf("%w: %v", ErrAudience, err)
	}
	return fmt.Errorf("%w: %v", ErrClaims, err)
}

// p256HalfOrder is N/2 for P-256: a canonical (low-s) signature has s <= N/2.
var p256HalfOrder = new(big.Int).Rsh(elliptic.P256().Params().N, 1)

func isLowS(sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	s := new(big.Int).SetBytes(sig[32:])
	return s.Cmp(p256HalfOrder) <= 0
}

// lowS rewrites an ES256 token's signature to its low-s form, the only one
// Verify accepts, so that a token has exactly one valid encoding.
func lowS(signed string) (string, error) {
	i := strings.LastIndexByte(signed, '.')
	sig, err := base64.RawURLEncoding.DecodeString(signed[i+1:])
	if err != nil || len(sig) != 64 {
		return "", fmt.Errorf("token: unexpected ES256 signature")
	}
	if isLowS(sig) {
		return signed, nil
	}
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	s.FillBytes(sig[32:])
	return signed[:i+1] + base64.RawURLEncoding.EncodeToString(sig), nil
}
