package action

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// The policy applies to live sessions: it reloads (SIGHUP, and when its
// file changes), and every live session the new policy would refuse is
// revoked.

// PolicyHolder holds the policy in force. A reload swaps it whole; each
// request reads it once.
type PolicyHolder struct{ p atomic.Pointer[Policy] }

// NewPolicyHolder holds p.
func NewPolicyHolder(p *Policy) *PolicyHolder {
	h := &PolicyHolder{}
	h.p.Store(p)
	return h
}

// Load returns the policy in force.
func (h *PolicyHolder) Load() *Policy { return h.p.Load() }

// Store puts p in force.
func (h *PolicyHolder) Store(p *Policy) { h.p.Store(p) }

// Refuses judges a live session as the action would judge its mint now:
// the admins selector (on the admin the session records), collections,
// never (the leading-integer rule included), full_access for a full scope,
// and require_consent. consent is asked only when the collection requires
// it. It returns the refusing rule and its detail, or "" when allowed.
func (p *Policy) Refuses(sess store.Session, consent func() (bool, error)) (rule, detail string, err error) {
	a := Admin{ID: sess.Actor.ID, Email: sess.Actor.Email, Team: sess.Actor.Team, Role: sess.Actor.Role,
		PermissionLevel: sess.Actor.PermissionLevel}
	scope := sess.Scope
	if scope == "" {
		scope = token.ScopeFull
	}
	t := target{Collection: sess.Subject.Collection, ID: sess.Subject.ID, Scope: scope}
	if rule, detail := p.check(a, t); rule != "" {
		return rule, detail, nil
	}
	if p.requiresConsent(t.Collection) {
		ok, err := consent()
		if err != nil {
			return "", "", err
		}
		if !ok {
			return ruleConsent, t.Collection + " " + t.ID + " has no active consent from the customer", nil
		}
	}
	return "", "", nil
}

// LiveStore is what enforcing a policy on live sessions reads.
type LiveStore interface {
	Sessions(ctx context.Context, adminID string) ([]store.Session, error)
	ConsentActive(ctx context.Context, subj audit.Subject) (bool, error)
}

// RevokeFunc revokes one live session with its session.revoked event; a
// session that ended meanwhile is store.ErrNoSession.
type RevokeFunc func(ctx context.Context, sess store.Session, detail string) error

// RevokedPrefix starts the detail of a session revoked by a policy reload.
const RevokedPrefix = "policy no longer allows: "

// Enforce revokes every live session p refuses, with the detail "policy no
// longer allows: rule <rule>: <why>", and returns how many it revoked.
// It is idempotent: a session already ended is skipped, so every instance
// may enforce the same reload.
func Enforce(ctx context.Context, p *Policy, st LiveStore, revoke RevokeFunc) (int, error) {
	list, err := st.Sessions(ctx, "")
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, sess := range list {
		rule, detail, err := p.Refuses(sess, func() (bool, error) { return st.ConsentActive(ctx, sess.Subject) })
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if rule == "" {
			continue
		}
		err = revoke(ctx, sess, RevokedPrefix+"rule "+rule+": "+detail)
		switch {
		case errors.Is(err, store.ErrNoSession):
		case err != nil:
			errs = append(errs, err)
		default:
			n++
		}
	}
	return n, errors.Join(errs...)
}

// Reloader reloads the policy file into Holder on demand (SIGHUP) and when
// the file changes (its modification time or size, polled every Interval),
// then enforces the new policy on live sessions. A file that does not
// parse (or is empty) keeps the policy in force; OnResult hears every
// reload's outcome (the metrics).
type Reloader struct {
	Path     string
	Holder   *PolicyHolder
	Log      *slog.Logger
	Interval time.Duration // how often the file is looked at
	// Recheck, when positive, enforces a reloaded policy once more this
	// long after the reload: a token minted under the old policy (by an
	// instance that had not reloaded yet) may open a session up to its
	// lifetime later.
	Recheck  time.Duration
	Store    LiveStore
	Revoke   RevokeFunc
	OnResult func(err error)

	mu   sync.Mutex // one reload at a time
	seen fileStamp
}

// DefaultPolicyPoll is how often serve looks at the policy file.
const DefaultPolicyPoll = 30 * time.Second

type fileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
}

// Run enforces the policy in force on the live sessions (it may have
// changed while no instance ran), then looks at the file every Interval
// until ctx ends, reloading it when its modification time or size changed.
func (rl *Reloader) Run(ctx context.Context) {
	rl.mu.Lock()
	rl.seen = stamp(rl.Path)
	rl.enforce(ctx, rl.Holder.Load())
	rl.mu.Unlock()
	t := time.NewTicker(rl.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rl.mu.Lock()
		changed := stamp(rl.Path) != rl.seen
		rl.mu.Unlock()
		if changed {
			_ = rl.Reload(ctx, "file changed")
		}
	}
}

// Reload reads and parses the file now (why says what asked: "SIGHUP",
// "file changed"); on success it puts the policy in force and enforces it
// on the live sessions. On failure the policy in force stays, and the
// problems are logged and returned.
func (rl *Reloader) Reload(ctx context.Context, why string) error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.seen = stamp(rl.Path)
	p, err := readPolicy(rl.Path)
	if rl.OnResult != nil {
		rl.OnResult(err)
	}
	if err != nil {
		rl.Log.Error("policy reload failed; the previous policy stays in force", "why", why, "error", err)
		return err
	}
	rl.Holder.Store(p)
	rl.Log.Info("policy reloaded", "why", why, "file", rl.Path)
	rl.enforce(ctx, p)
	if rl.Recheck > 0 {
		time.AfterFunc(rl.Recheck, func() {
			if ctx.Err() == nil && rl.Holder.Load() == p {
				rl.enforce(ctx, p)
			}
		})
	}
	return nil
}

// readPolicy reads a policy file for a reload. An empty file is refused
// (a file caught while being rewritten in place must not fall back to the
// permissive defaults).
func readPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("policy %s: the file is empty", path)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

func (rl *Reloader) enforce(ctx context.Context, p *Policy) {
	if rl.Store == nil || rl.Revoke == nil {
		return
	}
	n, err := Enforce(ctx, p, rl.Store, rl.Revoke)
	if n > 0 {
		rl.Log.Warn("policy reload: revoked the live sessions the new policy refuses", "revoked", n)
	}
	if err != nil && ctx.Err() == nil {
		rl.Log.Error("policy reload: enforcing on live sessions failed; it is tried again at the next reload", "error", err)
	}
}
