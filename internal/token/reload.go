package token

import (
	"context"
	"errors"
	"time"
)

// DefaultWatchInterval is how often Watch rereads the keys folder by
// default. A key generated with an activation delay longer than this (plus
// the JWKS cache time of clients) is known everywhere before it signs.
const DefaultWatchInterval = 30 * time.Second

// UnknownKeyReloadInterval bounds the reloads that tokens naming an unknown
// key trigger: at most one per interval, so forged kids cannot make an
// instance reread its folder at will.
const UnknownKeyReloadInterval = 10 * time.Second

// Reload rereads the keys folder and, if it reads cleanly, replaces the
// keys in one step; readers never see a mix. If it fails (unreadable or
// loose file, bad sidecar, no key left that can sign) the keys stay as they
// were and the error is returned. It is meant for SIGHUP; Watch calls it
// periodically, and Verify calls it when a token names an unknown key.
func (ks *Keyset) Reload() error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.reloadLocked()
}

func (ks *Keyset) reloadLocked() error {
	if ks.dir == "" {
		return errors.New("token: keyset has no folder to reload")
	}
	s, err := readDir(ks.dir, ks.now())
	if err != nil {
		if ks.log != nil {
			ks.log.Error("keys folder not reloaded; keeping the keys loaded before", "dir", ks.dir, "error", err)
		}
		return err
	}
	old := ks.cur.Swap(s)
	ks.reloads.Add(1)
	if ks.log != nil && !sameKeys(old, s) {
		ks.log.Info("keys folder reloaded", "dir", ks.dir, "count", len(s.keys), "signer", s.signer(ks.now()))
	}
	return nil
}

// sameKeys reports whether a and b hold the same keys with the same
// lifecycles.
func sameKeys(a, b *snapshot) bool {
	if len(a.keys) != len(b.keys) {
		return false
	}
	for i, k := range a.keys {
		o := b.keys[i]
		if k.ID != o.ID || k.File != o.File || !k.ActivateAt.Equal(o.ActivateAt) ||
			!k.RetireAt.Equal(o.RetireAt) || !k.DropAt.Equal(o.DropAt) {
			return false
		}
	}
	return true
}

// Watch reloads the keys folder every interval (DefaultWatchInterval when
// interval <= 0) until ctx is done. A failed reload keeps the keys (and is
// logged with WithLogger); the next tick tries again.
func (ks *Keyset) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = ks.Reload() // the error is logged; the keys are kept
		}
	}
}

// reloadForKid makes one reload attempt for a token that names the key
// kid, which this keyset does not hold, unless an attempt was made less
// than UnknownKeyReloadInterval ago. It reports whether kid is known
// afterwards. A reload that another token triggered meanwhile counts.
func (ks *Keyset) reloadForKid(kid string) bool {
	if ks.dir == "" {
		return false
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if _, ok := ks.cur.Load().byID[kid]; ok {
		return true
	}
	now := ks.now()
	if !ks.lastKidReload.IsZero() && now.Sub(ks.lastKidReload) < UnknownKeyReloadInterval {
		return false
	}
	ks.lastKidReload = now
	if ks.reloadLocked() != nil {
		return false
	}
	_, ok := ks.cur.Load().byID[kid]
	return ok
}
