package token_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/impersonator/impersonator/internal/token"
)

// fakeClock is a clock tests move by hand; safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// instance is one service instance: its own Keyset on the shared folder.
type instance struct {
	name string
	keys *token.Keyset
	is   *token.Issuer
	v    *token.Verifier
}

func newInstance(t *testing.T, name, dir string, clk *fakeClock) *instance {
	t.Helper()
	ks, err := token.LoadDir(dir, token.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	return &instance{name, ks, token.NewIssuer(ks, iss, aud, clk.Now), token.NewVerifier(ks, iss, aud, clk.Now)}
}

// mint issues a token of kind k, 1m for impersonation and 30m for session,
// and returns it with the kid it was signed with.
func (in *instance) mint(t *testing.T, k token.Kind) (raw, kid string) {
	t.Helper()
	c, ttl := claims(), time.Minute
	if k == token.Session {
		c.SID, ttl = "sess-1", 30*time.Minute
	}
	raw, _, err := in.is.Issue(k, c, ttl)
	if err != nil {
		t.Fatalf("%s: issue %s: %v", in.name, k, err)
	}
	return raw, header(t, raw)["kid"].(string)
}

func published(t *testing.T, ks *token.Keyset) []string {
	t.Helper()
	var set struct {
		Keys []struct{ Kid string } `json:"keys"`
	}
	if err := json.Unmarshal(ks.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

// signsWith checks that every instance signs both kinds with kid, and that
// each token verifies on every instance.
func signsWith(t *testing.T, kid string, ins ...*instance) {
	t.Helper()
	for _, from := range ins {
		for _, k := range []token.Kind{token.Impersonation, token.Session} {
			raw, got := from.mint(t, k)
			if got != kid {
				t.Errorf("%s signs %s with %s, want %s", from.name, k, got, kid)
			}
			for _, to := range ins {
				if _, err := to.v.Verify(k, raw); err != nil {
					t.Errorf("%s token from %s refused by %s: %v", k, from.name, to.name, err)
				}
			}
		}
	}
}

func verifiesOn(t *testing.T, what string, k token.Kind, raw string, ins ...*instance) {
	t.Helper()
	for _, in := range ins {
		if _, err := in.v.Verify(k, raw); err != nil {
			t.Errorf("%s refused by %s: %v", what, in.name, err)
		}
	}
}

// TestRotationWithoutRestart walks a full rotation across two instances
// sharing one keys folder, moving only the clock and the files: no
// restart, and no token of one instance is ever refused by the other.
func TestRotationWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	a, err := token.WriteKey(dir, token.AlgEdDSA, clk.Now(), clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	one, two := newInstance(t, "instance 1", dir, clk), newInstance(t, "instance 2", dir, clk)
	signsWith(t, a.ID, one, two)
	if _, err := token.Retire(dir, a.ID, clk.Now(), 30*time.Minute); err == nil {
		t.Error("retired the only key, the one that signs")
	}

	// B, pending for 10m. Instance 2 reloads (SIGHUP or Watch); instance
	// 1 does not yet.
	clk.Advance(time.Minute)
	b, err := token.WriteKey(dir, token.AlgES256, clk.Now(), clk.Now().Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := two.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := two.keys.State(b); got != token.Pending {
		t.Errorf("B on instance 2 is %s, want pending", got)
	}
	signsWith(t, a.ID, one, two)
	// A token signed by B (say, by an instance whose clock runs ahead)
	// reaches instance 1, which has not loaded B: the unknown kid makes
	// it reload once, and it verifies.
	bOnly, err := token.NewKeyset(b)
	if err != nil {
		t.Fatal(err)
	}
	byB, _, err := token.NewIssuer(bOnly, iss, aud, clk.Now).Issue(token.Impersonation, claims(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	verifiesOn(t, "token signed by pending B", token.Impersonation, byB, one, two)
	if got := token.ReloadsForTest(one.keys); got != 1 {
		t.Errorf("instance 1 reloaded %d times for B's token, want once", got)
	}
	if err := one.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*instance{one, two} {
		if kids := published(t, in.keys); !slices.Equal(kids, []string{a.ID, b.ID}) {
			t.Errorf("%s publishes %v, want A and B %v", in.name, kids, []string{a.ID, b.ID})
		}
	}
	// Tokens signed by A just before B activates.
	clk.Advance(10*time.Minute - time.Second)
	impA, _ := one.mint(t, token.Impersonation)
	sessA, kid := two.mint(t, token.Session)
	if kid != a.ID {
		t.Fatalf("session signed with %s one second before B activates, want A", kid)
	}

	// B's activation time passes: both sign with B, without any reload.
	reloads := token.ReloadsForTest(one.keys) + token.ReloadsForTest(two.keys)
	clk.Advance(time.Second)
	signsWith(t, b.ID, one, two)
	if got := token.ReloadsForTest(one.keys) + token.ReloadsForTest(two.keys); got != reloads {
		t.Errorf("%d reloads at B's activation, want none", got-reloads)
	}
	if got := one.keys.State(one.keys.Keys()[0]); got != token.VerifyOnly {
		t.Errorf("A is %s once B signs, want verify-only", got)
	}
	verifiesOn(t, "A's impersonation token", token.Impersonation, impA, one, two)
	verifiesOn(t, "A's session token", token.Session, sessA, one, two)
	if _, err := token.Retire(dir, b.ID, clk.Now(), 30*time.Minute); err == nil {
		t.Error("retired B while it signs")
	}

	// Retire A with a 30m grace. Instance 1 reloads; instance 2 has not yet.
	clk.Advance(time.Minute)
	retired, err := token.Retire(dir, a.ID, clk.Now(), 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(30 * time.Minute); !retired.DropAt.Equal(want) {
		t.Errorf("drop time = %v, want %v", retired.DropAt, want)
	}
	if err := one.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	signsWith(t, b.ID, one, two)
	clk.Advance(29 * time.Minute)
	verifiesOn(t, "A's session token within the grace", token.Session, sessA, one, two)
	if kids := published(t, one.keys); !slices.Contains(kids, a.ID) {
		t.Errorf("A unpublished within its grace: %v", kids)
	}
	if err := two.keys.Reload(); err != nil {
		t.Fatal(err)
	}

	// The grace passes: A is dropped on both, from JWKS and verification.
	clk.Advance(time.Minute)
	for _, in := range []*instance{one, two} {
		if kids := published(t, in.keys); !slices.Equal(kids, []string{b.ID}) {
			t.Errorf("%s publishes %v after A's drop time, want only B", in.name, kids)
		}
		if _, ok := in.keys.Lookup(a.ID); ok {
			t.Errorf("%s still finds A after its drop time", in.name)
		}
		if got := in.keys.State(in.keys.Keys()[0]); got != token.Retired {
			t.Errorf("%s: A is %s after its drop time, want retired", in.name, got)
		}
	}
	signsWith(t, b.ID, one, two)
	// Forged with A's key after the drop: refused (the session would have
	// expired anyway; a fresh one shows the key itself is refused).
	aOnly, err := token.NewKeyset(a)
	if err != nil {
		t.Fatal(err)
	}
	c := claims()
	c.SID = "sess-2"
	late, _, err := token.NewIssuer(aOnly, iss, aud, clk.Now).Issue(token.Session, c, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []*instance{one, two} {
		if _, err := in.v.Verify(token.Session, late); !errors.Is(err, token.ErrUnknownKey) {
			t.Errorf("%s: token signed by dropped A = %v, want ErrUnknownKey", in.name, err)
		}
	}
}

// TestFreshFolderPendingKeySigns: with only pending keys, the newest one
// signs, so a folder whose every key is pending still works.
func TestFreshFolderPendingKeySigns(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	if _, err := token.WriteKey(dir, token.AlgEdDSA, t0, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	newest, err := token.WriteKey(dir, token.AlgEdDSA, t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "instance", dir, clk)
	if got := in.keys.State(newest); got != token.Signing {
		t.Errorf("newest pending key is %s, want signing", got)
	}
	if got := in.keys.State(in.keys.Keys()[0]); got != token.Pending {
		t.Errorf("older pending key is %s, want pending", got)
	}
	signsWith(t, newest.ID, in)
}

// TestUnknownKidReloadRateLimited: tokens naming unknown keys trigger at
// most one reload per 10s, and a reload finds a key written since.
func TestUnknownKidReloadRateLimited(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	if _, err := token.WriteNew(dir, token.AlgEdDSA, t0); err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "instance", dir, clk)
	signedBy := func(k *token.Key) string {
		t.Helper()
		ks, err := token.NewKeyset(k)
		if err != nil {
			t.Fatal(err)
		}
		raw, _, err := token.NewIssuer(ks, iss, aud, clk.Now).Issue(token.Impersonation, claims(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	b, err := token.WriteNew(dir, token.AlgEdDSA, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.v.Verify(token.Impersonation, signedBy(b)); err != nil {
		t.Fatalf("token of a key written after load: %v", err)
	}
	if got := token.ReloadsForTest(in.keys); got != 1 {
		t.Fatalf("%d reloads, want 1", got)
	}
	c, err := token.WriteNew(dir, token.AlgEdDSA, t0.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	byC := signedBy(c)
	clk.Advance(9 * time.Second)
	if _, err := in.v.Verify(token.Impersonation, byC); !errors.Is(err, token.ErrUnknownKey) {
		t.Errorf("second unknown kid within 10s = %v, want ErrUnknownKey without a reload", err)
	}
	if got := token.ReloadsForTest(in.keys); got != 1 {
		t.Errorf("%d reloads after two unknown kids within 10s, want 1", got)
	}
	// A token of a known key does not count against the limit, and a
	// known kid never reloads.
	if _, err := in.v.Verify(token.Impersonation, signedBy(b)); err != nil {
		t.Errorf("known key B: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := in.v.Verify(token.Impersonation, byC); err != nil {
		t.Errorf("unknown kid 10s after the last reload: %v", err)
	}
	if got := token.ReloadsForTest(in.keys); got != 2 {
		t.Errorf("%d reloads, want 2", got)
	}
}

// TestFailedReloadKeepsKeys: a folder that does not read cleanly leaves the
// loaded keys in place, and Reload says why.
func TestFailedReloadKeepsKeys(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	a, err := token.WriteNew(dir, token.AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "instance", dir, clk)
	jwks := string(in.keys.JWKS())
	b, err := token.WriteNew(dir, token.AlgEdDSA, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	bPath := filepath.Join(dir, b.File)
	sidecar := filepath.Join(dir, strings.TrimSuffix(b.File, ".pem")+".json")
	breakages := []struct {
		name  string
		brk   func() error
		fix   func() error
		inErr string
	}{
		{"world-readable key", func() error { return os.Chmod(bPath, 0o644) }, func() error { return os.Chmod(bPath, 0o600) }, "chmod 600"},
		{"not PEM", func() error { return os.WriteFile(filepath.Join(dir, "x.pem"), []byte("junk"), 0o600) },
			func() error { return os.Remove(filepath.Join(dir, "x.pem")) }, "x.pem"},
		{"sidecar with a typo", func() error { return os.WriteFile(sidecar, []byte(`{"retired_at":"2026-11-25T10:00:00Z"}`), 0o600) },
			func() error { return os.Remove(sidecar) }, "retired_at"},
		{"group-writable sidecar", func() error {
			if err := os.WriteFile(sidecar, []byte(`{}`), 0o600); err != nil {
				return err
			}
			return os.Chmod(sidecar, 0o620)
		},
			func() error { return os.Remove(sidecar) }, "chmod 600"},
		{"empty folder", func() error { return os.Rename(dir, dir+".moved") },
			func() error { return os.Rename(dir+".moved", dir) }, "no such file"},
	}
	for _, br := range breakages {
		if err := br.brk(); err != nil {
			t.Fatal(err)
		}
		if err := in.keys.Reload(); err == nil || !strings.Contains(err.Error(), br.inErr) {
			t.Errorf("%s: Reload = %v, want an error naming %q", br.name, err, br.inErr)
		}
		if got := in.keys.Signer(); got == nil || got.ID != a.ID || string(in.keys.JWKS()) != jwks {
			t.Errorf("%s: keys changed by a failed reload", br.name)
		}
		if _, ok := in.keys.Lookup(b.ID); ok {
			t.Errorf("%s: B loaded by a failed reload", br.name)
		}
		signsWith(t, a.ID, in)
		if err := br.fix(); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	signsWith(t, b.ID, in)
}

// TestConcurrentSignVerifyDuringReload: Sign, Issue, Verify and JWKS run
// while keys are written and reloaded (meaningful under -race).
func TestConcurrentSignVerifyDuringReload(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	if _, err := token.WriteNew(dir, token.AlgEdDSA, t0); err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "instance", dir, clk)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				raw, _, err := in.is.Issue(token.Session, func() token.Claims { c := claims(); c.SID = "s"; return c }(), time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := in.v.Verify(token.Session, raw); err != nil {
					t.Error(err)
					return
				}
				kid, sig, err := in.keys.Sign([]byte("checkpoint"))
				if err == nil {
					err = in.keys.VerifySignature(kid, []byte("checkpoint"), sig)
				}
				if err != nil {
					t.Error(err)
					return
				}
				_ = in.keys.JWKS()
			}
		})
	}
	for i := range 20 {
		alg := token.AlgEdDSA
		if i%2 == 1 {
			alg = token.AlgES256
		}
		if _, err := token.WriteNew(dir, alg, t0); err != nil {
			t.Error(err)
			break
		}
		if err := in.keys.Reload(); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
	if n := len(in.keys.Keys()); n != 21 {
		t.Errorf("%d keys after 20 rotations, want 21", n)
	}
}

// TestWriteKeyNamesSortInOrder: names sort in creation order with a clock
// that does not move, and after a file of the earlier, per-second format.
func TestWriteKeyNamesSortInOrder(t *testing.T) {
	dir := t.TempDir()
	old, err := token.WriteNew(dir, token.AlgEdDSA, t0)
	if err != nil {
		t.Fatal(err)
	}
	// The earlier format: <time to the second>Z-<kid>.pem.
	oldName := t0.Format("20060102T150405Z") + "-" + old.ID + ".pem"
	if err := os.Rename(filepath.Join(dir, old.File), filepath.Join(dir, oldName)); err != nil {
		t.Fatal(err)
	}
	want := []string{old.ID}
	for range 3 {
		k, err := token.WriteNew(dir, token.AlgEdDSA, t0.Add(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, k.ID)
	}
	ks, err := token.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range ks.Keys() {
		got = append(got, k.ID)
	}
	if !slices.Equal(got, want) || ks.Signer().ID != want[3] {
		t.Errorf("keys in file order %v (signer %s), want creation order %v, the last signing", got, ks.Signer().ID, want)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 4 {
		t.Errorf("folder holds %d files, want 4 keys and no sidecar for keys active at once", len(files))
	}
}

// TestSidecarFormat pins the sidecar file of a pending, then retired key.
func TestSidecarFormat(t *testing.T) {
	dir := t.TempDir()
	if _, err := token.WriteNew(dir, token.AlgEdDSA, t0); err != nil {
		t.Fatal(err)
	}
	k, err := token.WriteKey(dir, token.AlgEdDSA, t0, t0.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.File, "20261125T100000.000000001Z-") {
		t.Errorf("file name %s, want the time to the nanosecond, after the first key's", k.File)
	}
	path := filepath.Join(dir, strings.TrimSuffix(k.File, ".pem")+".json")
	read := func() string {
		t.Helper()
		info, err := os.Stat(path)
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("sidecar: %v, %v; want mode 0600", info, err)
		}
		b, _ := os.ReadFile(path)
		return strings.TrimSpace(string(b))
	}
	if got, want := read(), `{"activate_at":"2026-11-25T10:10:00Z"}`; got != want {
		t.Errorf("sidecar = %s, want %s", got, want)
	}
	// Retiring a pending key (a rollout called off) keeps its activation.
	if _, err := token.Retire(dir, k.ID, t0.Add(time.Minute), time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), `{"activate_at":"2026-11-25T10:10:00Z","retire_at":"2026-11-25T10:01:00Z","drop_at":"2026-11-25T11:01:00Z"}`; got != want {
		t.Errorf("sidecar = %s, want %s", got, want)
	}
	if _, err := token.Retire(dir, k.ID, t0.Add(time.Minute), time.Hour); err == nil || !strings.Contains(err.Error(), "already retired") {
		t.Errorf("retiring twice = %v", err)
	}
	if _, err := token.Retire(dir, "no-such-kid", t0, time.Hour); err == nil {
		t.Error("retired an unknown key")
	}
	if err := os.WriteFile(path, []byte(`{"drop_at":"2026-11-25T11:01:00Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := token.LoadDir(dir); err == nil || !strings.Contains(err.Error(), "drop_at") {
		t.Errorf("drop_at without retire_at = %v, want an error", err)
	}
}

// TestWatchReloads: Watch picks up a new key at its interval (30s by
// default) until its context ends. Time is synctest's fake time.
func TestWatchReloads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		if _, err := token.WriteNew(dir, token.AlgEdDSA, time.Now()); err != nil {
			t.Fatal(err)
		}
		ks, err := token.LoadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { ks.Watch(ctx, 0); close(done) }()
		b, err := token.WriteNew(dir, token.AlgEdDSA, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(token.DefaultWatchInterval - time.Second) // fake time: instant
		synctest.Wait()
		if _, ok := ks.Lookup(b.ID); ok {
			t.Error("B loaded before the first tick")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if ks.Signer().ID != b.ID {
			t.Errorf("signer after a Watch tick = %s, want the new key %s", ks.Signer().ID, b.ID)
		}
		cancel()
		<-done
	})
}
