package token

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KeyState is what a key does at a given time.
type KeyState string

// The states of a key. A key is pending before its activation time; once
// active it signs if it is the newest active key (or, while no key is
// active, the newest pending one), and only verifies otherwise. Retired, it
// only verifies until its drop time, and then is dropped: it neither
// verifies tokens nor is published.
const (
	Pending    KeyState = "pending"
	Signing    KeyState = "signing"
	VerifyOnly KeyState = "verify-only"
	Retired    KeyState = "retired"
)

func (k *Key) retired(now time.Time) bool { return !k.RetireAt.IsZero() && !now.Before(k.RetireAt) }
func (k *Key) dropped(now time.Time) bool { return !k.DropAt.IsZero() && !now.Before(k.DropAt) }
func (k *Key) pending(now time.Time) bool { return !k.retired(now) && now.Before(k.ActivateAt) }
func (k *Key) active(now time.Time) bool  { return !k.retired(now) && !now.Before(k.ActivateAt) }

func (s *snapshot) state(k *Key, now time.Time) KeyState {
	switch signer := s.signer(now); {
	case k.dropped(now):
		return Retired
	case signer != nil && signer.ID == k.ID:
		return Signing
	case k.pending(now):
		return Pending
	}
	return VerifyOnly
}

// sidecar is the lifecycle file of a key: for the key file
// 20261125T100000.000000000Z-<kid>.pem it is
// 20261125T100000.000000000Z-<kid>.json, holding a JSON object with three
// optional RFC 3339 times (any other member is an error):
//
//	{"activate_at":"2026-11-25T10:10:00Z","retire_at":"2026-11-26T09:00:00Z","drop_at":"2026-11-26T09:30:00Z"}
//
// activate_at: the key is pending before it (published and verifying, not
// signing). retire_at: from it the key only verifies. drop_at (set with
// retire_at, not before it): from it the key neither verifies tokens nor is
// published. A key without a sidecar is active and never retired: the
// format of keys written before lifecycles existed. Sidecars are written
// atomically (temporary file, then rename) with mode 0600 and must not be
// writable by group or others.
type sidecar struct {
	ActivateAt time.Time `json:"activate_at,omitzero"`
	RetireAt   time.Time `json:"retire_at,omitzero"`
	DropAt     time.Time `json:"drop_at,omitzero"`
}

func sidecarName(keyFile string) string { return strings.TrimSuffix(keyFile, ".pem") + ".json" }

func readSidecar(dir string, k *Key) error {
	path := filepath.Join(dir, sidecarName(k.File))
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if info.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("key sidecar %s: mode %v lets others change it; chmod 600 it", path, info.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var sc sidecar
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sc); err != nil {
		return fmt.Errorf("key sidecar %s: %w", path, err)
	}
	if !sc.DropAt.IsZero() && (sc.RetireAt.IsZero() || sc.DropAt.Before(sc.RetireAt)) {
		return fmt.Errorf("key sidecar %s: drop_at needs a retire_at not after it", path)
	}
	k.ActivateAt, k.RetireAt, k.DropAt = sc.ActivateAt, sc.RetireAt, sc.DropAt
	return nil
}

func writeSidecar(dir string, k *Key) error {
	b, err := json.Marshal(sidecar{ActivateAt: k.ActivateAt, RetireAt: k.RetireAt, DropAt: k.DropAt})
	if err != nil {
		return err
	}
	return writeAtomic(dir, sidecarName(k.File), append(b, '\n'))
}

// writeAtomic writes name in dir with mode 0600 through a temporary file
// and a rename, so that a concurrent reload sees the old file or the new
// one, never a part. The temporary name ends in neither .pem nor .json.
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, name))
}

// stampLayout names key files: UTC, to the nanosecond, so that names sort
// from oldest to newest. Files of the earlier format end at the second.
const (
	stampLayout    = "20060102T150405.000000000Z"
	oldStampLayout = "20060102T150405Z"
)

// nextStamp returns now, or, when a key file of dir is as new or newer
// (clock stalled or stepped back, or two keys in one clock tick), one
// nanosecond after the newest, so a new key's file always sorts last.
func nextStamp(dir string, now time.Time) (time.Time, error) {
	now = now.UTC()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return now, err
	}
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "-")
		if !ok || !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		t, err := time.Parse(stampLayout, prefix)
		if err != nil {
			if t, err = time.Parse(oldStampLayout, prefix); err != nil {
				continue
			}
			// "…05Z" sorts after "…05.x…Z": count it as the second's end.
			t = t.Add(time.Second - time.Nanosecond)
		}
		if !now.After(t) {
			now = t.Add(time.Nanosecond)
		}
	}
	return now, nil
}

// WriteKey generates a key for alg and writes it to dir (created with mode
// 0700 when missing) as <UTC time to the nanosecond>-<kid>.pem, mode 0600,
// where the time is now, bumped if needed so that the file sorts after
// every key file already there. When activateAt is after now it also
// writes the key's sidecar (see the sidecar format above: activate_at), so
// the key is pending until then; that sidecar is written before the key,
// so that no reload ever sees the key without it.
func WriteKey(dir, alg string, now, activateAt time.Time) (*Key, error) {
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
	stamp, err := nextStamp(dir, now)
	if err != nil {
		return nil, err
	}
	k.File = stamp.Format(stampLayout) + "-" + k.ID + ".pem"
	if activateAt.After(now) {
		k.ActivateAt = activateAt.UTC()
		if err := writeSidecar(dir, k); err != nil {
			return nil, err
		}
	}
	if err := writeAtomic(dir, k.File, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		os.Remove(filepath.Join(dir, sidecarName(k.File)))
		return nil, err
	}
	return k, nil
}

// Retire marks the key kid of dir retired at now: it only verifies from
// then, and is dropped at now+grace, which must cover the longest lifetime
// of a token or session it signed (IMPERSONATOR_SESSION_TTL). It refuses
// the key that signs at now (make a newer key active first) and a key
// already retired. It returns the key with its new lifecycle.
func Retire(dir, kid string, now time.Time, grace time.Duration) (*Key, error) {
	if grace < 0 {
		return nil, fmt.Errorf("grace %s is negative", grace)
	}
	s, err := readDir(dir, now)
	if err != nil {
		return nil, err
	}
	k, ok := s.byID[kid]
	switch {
	case !ok:
		return nil, fmt.Errorf("no key %q in %s", kid, dir)
	case !k.RetireAt.IsZero():
		return nil, fmt.Errorf("key %s is already retired (at %s)", kid, k.RetireAt.Format(time.RFC3339))
	case s.signer(now) == k:
		return nil, fmt.Errorf("key %s signs now: make a newer key active first (keys generate, and wait for its activation or use --activate-after 0)", kid)
	}
	r := *k
	r.RetireAt, r.DropAt = now.UTC(), now.UTC().Add(grace)
	if err := writeSidecar(dir, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
