package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"
)

// PublicKeys are the public halves of a keyset, as its JWKS publishes
// them: enough to verify checkpoint signatures (audit verify --jwks) with
// neither the keys folder nor its private keys.
type PublicKeys struct {
	keys map[string]crypto.PublicKey
}

// ParseJWKS reads a JSON Web Key Set of Ed25519 (OKP) and P-256 (EC) keys.
// A key whose kid is not its RFC 7638 thumbprint is refused: the kid names
// the key, so it cannot be swapped.
func ParseJWKS(b []byte) (*PublicKeys, error) {
	var set jwkSet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	pk := &PublicKeys{keys: map[string]crypto.PublicKey{}}
	for i, j := range set.Keys {
		var pub crypto.PublicKey
		switch {
		case j.Kty == "OKP" && j.Crv == "Ed25519":
			x, err := b64.DecodeString(j.X)
			if err != nil || len(x) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("jwks: key %d: bad Ed25519 x", i)
			}
			pub = ed25519.PublicKey(x)
		case j.Kty == "EC" && j.Crv == "P-256":
			x, errX := b64.DecodeString(j.X)
			y, errY := b64.DecodeString(j.Y)
			if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
				return nil, fmt.Errorf("jwks: key %d: bad P-256 point", i)
			}
			k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
			if err != nil {
				return nil, fmt.Errorf("jwks: key %d: %w", i, err)
			}
			pub = k
		default:
			return nil, fmt.Errorf("jwks: key %d: type %s/%s is not allowed", i, j.Kty, j.Crv)
		}
		tp, err := Thumbprint(pub)
		if err != nil {
			return nil, err
		}
		if tp != j.Kid {
			return nil, fmt.Errorf("jwks: key %d: kid %q is not its thumbprint %s", i, j.Kid, tp)
		}
		pk.keys[j.Kid] = pub
	}
	return pk, nil
}

// HasKey reports whether kid is in the set.
func (pk *PublicKeys) HasKey(kid string) bool {
	_, ok := pk.keys[kid]
	return ok
}

// VerifySignature checks a signature made by Keyset.Sign with the key kid.
func (pk *PublicKeys) VerifySignature(kid string, msg, sig []byte) error {
	p, ok := pk.keys[kid]
	if !ok {
		return fmt.Errorf("%w: unknown key %q", ErrBadSignature, kid)
	}
	return verifySignature(p, msg, sig)
}

// Verify checks raw as a token of kind k issued by iss for aud, at now,
// with the same checks as Verifier.Verify (allowlisted algorithm of the key
// named by kid, typ, iss, aud, exp, iat, jti, lifetime, strict decoding,
// canonical ECDSA signatures), its keys from the JWKS: what an app that
// holds only the service's JWKS can know of a token. A kid the set does not
// hold is ErrUnknownKey; fetching the set again is the caller's business.
func (pk *PublicKeys) Verify(k Kind, raw, iss, aud string, now time.Time) (*Claims, error) {
	return verify(k, raw, iss, aud, now, func(kid string) (string, crypto.PublicKey, bool) {
		p, ok := pk.keys[kid]
		if !ok {
			return "", nil, false
		}
		switch p.(type) {
		case ed25519.PublicKey:
			return AlgEdDSA, p, true
		case *ecdsa.PublicKey:
			return AlgES256, p, true
		}
		return "", nil, false
	})
}

// verifySignature checks sig, made by Keyset.Sign, over msg with the
// public key p.
func verifySignature(p crypto.PublicKey, msg, sig []byte) error {
	switch p := p.(type) {
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

// HasKey reports whether the keyset verifies with kid.
func (ks *Keyset) HasKey(kid string) bool {
	_, ok := ks.Lookup(kid)
	return ok
}
