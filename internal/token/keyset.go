package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Algorithms this service signs and accepts. Nothing else is ever accepted.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
)

// Key is one signing key of the keyset. A Key is never modified once
// loaded: a reload builds new ones.
type Key struct {
	ID   string // RFC 7638 JWK thumbprint (SHA-256, base64url)
	Alg  string // AlgEdDSA or AlgES256
	File string // file name inside the keys folder

	// Lifecycle, from the key's sidecar file (see WriteKey); zero when
	// unset. The key is pending before ActivateAt, verify-only from
	// RetireAt and dropped (neither verifies tokens nor is published)
	// from DropAt.
	ActivateAt time.Time
	RetireAt   time.Time
	DropAt     time.Time

	private crypto.Signer
}

// Public returns the key's public half.
func (k *Key) Public() crypto.PublicKey { return k.private.Public() }

// LogValue keeps private material out of logs.
func (k *Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kid", k.ID), slog.String("alg", k.Alg), slog.String("file", k.File))
}

// Keyset holds the keys of the keys folder and what each does at a given
// time (see KeyState): the newest active key signs; pending, active and
// retired-but-not-dropped keys verify and are published in the JWKS.
//
// A Keyset loaded with LoadDir can reload its folder without a restart
// (Reload, Watch, and one rate-limited reload when a token names an unknown
// key). All its methods are safe for concurrent use: readers work on an
// immutable snapshot that a reload replaces atomically, and the signer is
// chosen against the clock at each use, so a pending key starts signing at
// its activation time without any reload.
type Keyset struct {
	dir string // "" for NewKeyset: nothing to reload
	now func() time.Time
	log *slog.Logger // nil: reloads are not logged

	cur     atomic.Pointer[snapshot]
	reloads atomic.Int64 // successful reloads, for tests

	mu            sync.Mutex // serialises reloads
	lastKidReload time.Time  // guarded by mu
}

// snapshot is one reading of the keys folder; never modified once stored.
type snapshot struct {
	keys []*Key // oldest first: file name order (NewKeyset: argument order)
	byID map[string]*Key
	jwks []jwk // public JWK of keys[i]
}

// ErrNoKeys is returned by LoadDir for a folder without a key that can sign.
var ErrNoKeys = errors.New("no signing keys")

// Option configures a Keyset loaded by LoadDir or LoadOrCreate.
type Option func(*Keyset)

// WithClock sets the clock that decides the keys' states (time.Now by
// default). An Issuer and a Verifier use their own clock instead.
func WithClock(now func() time.Time) Option { return func(ks *Keyset) { ks.now = now } }

// WithLogger logs reloads that change the keys and reloads that fail. Keys
// are logged by id, algorithm and file only.
func WithLogger(log *slog.Logger) Option { return func(ks *Keyset) { ks.log = log } }

// NewKeyset builds a keyset from keys, oldest first; with no lifecycle set
// on them, the last one signs. It has no folder: Reload fails.
func NewKeyset(keys ...*Key) (*Keyset, error) {
	ks := &Keyset{now: time.Now}
	s, err := newSnapshot(keys, ks.now())
	if err != nil {
		return nil, err
	}
	ks.cur.Store(s)
	return ks, nil
}

func newSnapshot(keys []*Key, now time.Time) (*snapshot, error) {
	if len(keys) == 0 {
		return nil, ErrNoKeys
	}
	s := &snapshot{keys: keys, byID: make(map[string]*Key, len(keys))}
	for _, k := range keys {
		if _, dup := s.byID[k.ID]; dup {
			return nil, fmt.Errorf("key %s is present twice (%s)", k.ID, k.File)
		}
		s.byID[k.ID] = k
		j, err := publicJWK(k.Public())
		if err != nil {
			return nil, err
		}
		j.Kid, j.Alg, j.Use = k.ID, k.Alg, "sig"
		s.jwks = append(s.jwks, j)
	}
	if s.signer(now) == nil {
		return nil, fmt.Errorf("%w: every key is retired", ErrNoKeys)
	}
	return s, nil
}

// signer returns the newest active key at now or, when none is active yet,
// the newest pending one; nil when every key is retired.
func (s *snapshot) signer(now time.Time) *Key {
	var pending *Key
	for _, k := range slices.Backward(s.keys) {
		if k.active(now) {
			return k
		}
		if pending == nil && k.pending(now) {
			pending = k
		}
	}
	return pending
}

// lookup returns the key kid if it verifies tokens at now.
func (s *snapshot) lookup(kid string, now time.Time) (*Key, bool) {
	k, ok := s.byID[kid]
	if !ok || k.dropped(now) {
		return nil, false
	}
	return k, true
}

// Signer returns the key that signs new tokens now, or nil when every key
// is retired.
func (ks *Keyset) Signer() *Key { return ks.signerAt(ks.now()) }

func (ks *Keyset) signerAt(now time.Time) *Key { return ks.cur.Load().signer(now) }

// Lookup returns the key with id kid if it verifies tokens now (any key
// that is not dropped).
func (ks *Keyset) Lookup(kid string) (*Key, bool) { return ks.cur.Load().lookup(kid, ks.now()) }

// Keys returns every key of the folder, dropped ones included, oldest
// first. State tells what each does now.
func (ks *Keyset) Keys() []*Key { return slices.Clone(ks.cur.Load().keys) }

// State returns what k does now.
func (ks *Keyset) State(k *Key) KeyState { return ks.cur.Load().state(k, ks.now()) }

// JWKS returns the public keys that verify tokens now as a JSON Web Key Set
// (RFC 7517). It changes with reloads and drop times: call it per request.
func (ks *Keyset) JWKS() []byte {
	s, now := ks.cur.Load(), ks.now()
	set := jwkSet{Keys: []jwk{}}
	for i, k := range s.keys {
		if !k.dropped(now) {
			set.Keys = append(set.Keys, s.jwks[i])
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	return b
}

// LoadDir reads every *.pem file of dir, with its sidecar file if any (see
// WriteKey). Files must hold one PKCS#8 private key (Ed25519 or ECDSA
// P-256) and must not be readable by group or others; sidecars must not be
// writable by them. The keyset can reload dir later (Reload, Watch).
func LoadDir(dir string, opts ...Option) (*Keyset, error) {
	ks := &Keyset{dir: dir, now: time.Now}
	for _, o := range opts {
		o(ks)
	}
	s, err := readDir(dir, ks.now())
	if err != nil {
		return nil, err
	}
	ks.cur.Store(s)
	return ks, nil
}

func readDir(dir string, now time.Time) (*snapshot, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var keys []*Key
	var problems []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		k, err := loadKeyFile(dir, e.Name())
		if err == nil {
			err = readSidecar(dir, k)
		}
		if err != nil {
			problems = append(problems, err)
			continue
		}
		keys = append(keys, k)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w in %s", ErrNoKeys, dir)
	}
	slices.SortFunc(keys, func(a, b *Key) int { return strings.Compare(a.File, b.File) })
	s, err := newSnapshot(keys, now)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return s, nil
}

func loadKeyFile(dir, name string) (*Key, error) {
	path := filepath.Join(dir, name)
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key %s: mode %v lets others read it; chmod 600 it", path, info.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("key %s: not a PEM \"PRIVATE KEY\" (PKCS#8) block", path)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("key %s: more than one PEM block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	k, err := newKey(parsed)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	k.File = name
	return k, nil
}

func newKey(priv any) (*Key, error) {
	var k Key
	switch p := priv.(type) {
	case ed25519.PrivateKey:
		k.Alg, k.private = AlgEdDSA, p
	case *ecdsa.PrivateKey:
		if p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA curve %s is not allowed; use P-256", p.Curve.Params().Name)
		}
		k.Alg, k.private = AlgES256, p
	default:
		return nil, fmt.Errorf("key type %T is not allowed; use Ed25519 or ECDSA P-256", priv)
	}
	var err error
	if k.ID, err = Thumbprint(k.Public()); err != nil {
		return nil, err
	}
	return &k, nil
}

// Generate creates a new key for alg (AlgEdDSA or AlgES256).
func Generate(alg string) (*Key, error) {
	var priv any
	var err error
	switch alg {
	case AlgEdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case AlgES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("algorithm %q is not supported; use %s or %s", alg, AlgEdDSA, AlgES256)
	}
	if err != nil {
		return nil, err
	}
	return newKey(priv)
}

// WriteNew generates a key for alg and writes it to dir, active at once:
// WriteKey with activateAt now.
func WriteNew(dir, alg string, now time.Time) (*Key, error) {
	return WriteKey(dir, alg, now, now)
}

// LoadOrCreate loads dir, or, when it holds no key (or does not exist),
// writes a new EdDSA key, active at once, first. created reports whether it
// did.
func LoadOrCreate(dir string, now time.Time, opts ...Option) (ks *Keyset, created *Key, err error) {
	ks, err = LoadDir(dir, opts...)
	if err == nil {
		return ks, nil, nil
	}
	if !errors.Is(err, ErrNoKeys) && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	if created, err = WriteNew(dir, AlgEdDSA, now); err != nil {
		return nil, nil, err
	}
	ks, err = LoadDir(dir, opts...)
	return ks, created, err
}

// jwk holds the public members of a JWK; field order is irrelevant here.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y,omitempty"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	Use string `json:"use,omitempty"`
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

var b64 = base64.RawURLEncoding

func publicJWK(pub crypto.PublicKey) (jwk, error) {
	switch p := pub.(type) {
	case ed25519.PublicKey:
		return jwk{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(p)}, nil
	case *ecdsa.PublicKey:
		raw, err := p.Bytes() // uncompressed point 0x04 || X || Y
		if err != nil {
			return jwk{}, err
		}
		return jwk{Kty: "EC", Crv: "P-256", X: b64.EncodeToString(raw[1:33]), Y: b64.EncodeToString(raw[33:65])}, nil
	}
	return jwk{}, fmt.Errorf("key type %T is not allowed", pub)
}

// Thumbprint returns the RFC 7638 JWK thumbprint (SHA-256, base64url) of pub.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	j, err := publicJWK(pub)
	if err != nil {
		return "", err
	}
	// RFC 7638 section 3.2: required members only, in lexicographic order,
	// no white space.
	var canonical string
	switch j.Kty {
	case "OKP":
		canonical = fmt.Sprintf(`{"crv":%q,"kty":%q,"x":%q}`, j.Crv, j.Kty, j.X)
	case "EC":
		canonical = fmt.Sprintf(`{"crv":%q,"kty":%q,"x":%q,"y":%q}`, j.Crv, j.Kty, j.X, j.Y)
	}
	sum := sha256.Sum256([]byte(canonical))
	return b64.EncodeToString(sum[:]), nil
}

// Sign signs msg with the signing key (Ed25519, or ECDSA P-256 over
// SHA-256, ASN.1) and returns the key id with the signature. The audit
// log's checkpoints are signed this way.
func (ks *Keyset) Sign(msg []byte) (kid string, sig []byte, err error) {
	k := ks.Signer()
	if k == nil {
		return "", nil, fmt.Errorf("%w: every key is retired", ErrNoKeys)
	}
	switch p := k.private.(type) {
	case ed25519.PrivateKey:
		return k.ID, ed25519.Sign(p, msg), nil
	case *ecdsa.PrivateKey:
		sum := sha256.Sum256(msg)
		sig, err := ecdsa.SignASN1(rand.Reader, p, sum[:])
		return k.ID, sig, err
	}
	return "", nil, fmt.Errorf("key %s cannot sign", k.ID)
}

// ErrBadSignature is returned by VerifySignature.
var ErrBadSignature = errors.New("bad signature")

// VerifySignature checks a signature made by Sign with the key kid. Unlike
// token verification it accepts every key of the folder, dropped ones
// included: audit checkpoints must verify for as long as the audit log is
// kept, long after the tokens of their time expired. Deleting a key's file
// stops it.
func (ks *Keyset) VerifySignature(kid string, msg, sig []byte) error {
	k, ok := ks.cur.Load().byID[kid]
	if !ok {
		return fmt.Errorf("%w: unknown key %q", ErrBadSignature, kid)
	}
	return verifySignature(k.Public(), msg, sig)
}
