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
	"time"
)

// Algorithms this service signs and accepts. Nothing else is ever accepted.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
)

// Key is one signing key of the keyset.
type Key struct {
	ID      string // RFC 7638 JWK thumbprint (SHA-256, base64url)
	Alg     string // AlgEdDSA or AlgES256
	File    string // file name inside the keys folder
	private crypto.Signer
}

// Public returns the key's public half.
func (k *Key) Public() crypto.PublicKey { return k.private.Public() }

// LogValue keeps private material out of logs.
func (k *Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kid", k.ID), slog.String("alg", k.Alg), slog.String("file", k.File))
}

// Keyset holds every key of the keys folder. The key whose file name sorts
// last signs; every key verifies and is published in the JWKS.
type Keyset struct {
	keys   map[string]*Key
	signer *Key
	jwks   []byte
}

// ErrNoKeys is returned by LoadDir for a folder without keys.
var ErrNoKeys = errors.New("no signing keys")

// NewKeyset builds a keyset from keys; the last one signs.
func NewKeyset(keys ...*Key) (*Keyset, error) {
	if len(keys) == 0 {
		return nil, ErrNoKeys
	}
	ks := &Keyset{keys: make(map[string]*Key, len(keys)), signer: keys[len(keys)-1]}
	set := jwkSet{Keys: []jwk{}}
	for _, k := range keys {
		if _, dup := ks.keys[k.ID]; dup {
			return nil, fmt.Errorf("key %s is present twice (%s)", k.ID, k.File)
		}
		ks.keys[k.ID] = k
		j, err := publicJWK(k.Public())
		if err != nil {
			return nil, err
		}
		j.Kid, j.Alg, j.Use = k.ID, k.Alg, "sig"
		set.Keys = append(set.Keys, j)
	}
	var err error
	if ks.jwks, err = json.Marshal(set); err != nil {
		return nil, err
	}
	return ks, nil
}

// Signer returns the key that signs new tokens.
func (ks *Keyset) Signer() *Key { return ks.signer }

// Lookup returns the key with id kid.
func (ks *Keyset) Lookup(kid string) (*Key, bool) {
	k, ok := ks.keys[kid]
	return k, ok
}

// Keys returns every key, the signer last.
func (ks *Keyset) Keys() []*Key {
	out := make([]*Key, 0, len(ks.keys))
	for _, k := range ks.keys {
		if k != ks.signer {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b *Key) int { return strings.Compare(a.File, b.File) })
	return append(out, ks.signer)
}

// JWKS returns the public keys as a JSON Web Key Set (RFC 7517).
func (ks *Keyset) JWKS() []byte { return ks.jwks }

// LoadDir reads every *.pem file of dir. Files must hold one PKCS#8 private
// key (Ed25519 or ECDSA P-256) and must not be readable by group or others.
func LoadDir(dir string) (*Keyset, error) {
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
	return NewKeyset(keys...)
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

// WriteNew generates a key for alg and writes it to dir (created with mode
// 0700 when missing) as <UTC time>-<kid>.pem with mode 0600, so that the file
// names of a folder sort from oldest to newest.
func WriteNew(dir, alg string, now time.Time) (*Key, error) {
	k, err := Generate(alg)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.private)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	k.File = now.UTC().Format("20060102T150405Z") + "-" + k.ID + ".pem"
	f, err := os.OpenFile(filepath.Join(dir, k.File), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return k, nil
}

// LoadOrCreate loads dir, or, when it holds no key (or does not exist),
// writes a new EdDSA key first. created reports whether it did.
func LoadOrCreate(dir string, now time.Time) (ks *Keyset, created *Key, err error) {
	ks, err = LoadDir(dir)
	if err == nil {
		return ks, nil, nil
	}
	if !errors.Is(err, ErrNoKeys) && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	if created, err = WriteNew(dir, AlgEdDSA, now); err != nil {
		return nil, nil, err
	}
	ks, err = LoadDir(dir)
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
	k := ks.signer
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

// VerifySignature checks a signature made by Sign with the key kid.
func (ks *Keyset) VerifySignature(kid string, msg, sig []byte) error {
	k, ok := ks.keys[kid]
	if !ok {
		return fmt.Errorf("%w: unknown key %q", ErrBadSignature, kid)
	}
	switch p := k.Public().(type) {
	case ed25519.PublicKey:
		if ed25519.Verify(p, msg, sig) {
			return nil
		}
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(msg)
		if ecdsa.VerifyASN1(p, sum[:], sig) {
			return nil
		}
	}
	return ErrBadSignature
}
