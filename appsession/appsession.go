// Package appsession is the customer app's side of impersonator, as net/http
// middleware: it tells each request whether it is impersonated, by whom and
// as whom, and refuses changes under a read-only impersonation.
//
// A request is impersonated only when both hold:
//
//  1. its session cookie verifies against the service's JWKS with the
//     service's own checks (EdDSA or ES256 of the key named by kid, typ
//     impersonation-session+jwt, iss, aud, exp, iat, jti, strict decoding);
//  2. the service confirmed the session live (GET /impersonation/session
//     with the cookie, 200) at most Config.MaxAge before the decision.
//
// Every end of a session the service knows of (logout, revocation, idle
// timeout, the absolute cap, a policy reload) makes it answer 401, so the
// app stops impersonating at most MaxAge (default 2s, at most 4s) after the
// end. When it cannot tell (the service stopped, hung, failing, a JWKS it
// cannot fetch), the request is not impersonated: it reaches the app as the
// browser's own, never as the customer.
//
//	check, err := appsession.New(appsession.Config{
//		PublicURL: "https://app.example.com", // IMPERSONATOR_PUBLIC_URL
//		Audience:  "https://app.example.com", // IMPERSONATOR_AUDIENCE
//		ServiceURL: "http://127.0.0.1:8080",  // where the app reaches impersonator
//	})
//	…
//	http.ListenAndServe(":3000", check.Middleware(app))
//
//	// in a handler:
//	if imp, ok := appsession.FromContext(r.Context()); ok { … imp.Subject … }
package appsession

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/impersonator/impersonator/internal/token"
)

// Defaults and bounds of Config.
const (
	DefaultMaxAge  = 2 * time.Second
	MaxMaxAge      = 4 * time.Second // the end-detection bound stays under 5s
	DefaultTimeout = time.Second
	// JWKSCooldown is the least time between two fetches of the JWKS
	// caused by a kid it does not hold: a flood of forged kids costs the
	// service one request per cooldown.
	JWKSCooldown = 10 * time.Second
	// JWKSMaxAge is how long a fetched JWKS is used before it is fetched
	// again (a retired key leaves it).
	JWKSMaxAge = 10 * time.Minute
)

// Limits of what is read from the service, and of the session cache.
const (
	maxAnswerBytes = 64 << 10
	maxJWKSBytes   = 1 << 20
	maxCached      = 10000
)

// Config configures a Checker.
type Config struct {
	// PublicURL is the service's IMPERSONATOR_PUBLIC_URL: the cookie's
	// iss, and the cookie's name (__Host-impersonation_session when it is
	// https, impersonation_session otherwise, as the service sets it).
	PublicURL string
	// Audience is the service's IMPERSONATOR_AUDIENCE (by default its
	// IMPERSONATOR_APP_URL): the cookie's aud.
	Audience string
	// ServiceURL is where this app reaches impersonator (its JWKS and its
	// session endpoint), say http://127.0.0.1:8080; PublicURL when empty.
	ServiceURL string
	// MaxAge bounds how old the service's confirmation that a session is
	// live may be when a request is let through as impersonated: the time
	// an end takes to reach the app. Default 2s, at most 4s.
	MaxAge time.Duration
	// Timeout bounds each call to the service; shorter than MaxAge.
	// Default 1s. Past it, not impersonating.
	Timeout time.Duration
	// Client makes the calls; a client that follows no redirect when nil.
	Client *http.Client
	// ReadOnly answers a change (any method but GET, HEAD and OPTIONS)
	// under a read-only impersonation; a plain 403 when nil. The
	// impersonation is in its request's context.
	ReadOnly http.Handler
	// Log receives the service's failures (with the session id, never the
	// cookie); slog.Default() when nil.
	Log *slog.Logger
}

// Actor is the admin impersonating.
type Actor struct {
	ID    string
	Email string
}

// Impersonation is a live impersonated session, as the request sees it.
type Impersonation struct {
	SessionID  string
	Subject    string // the customer's id
	Collection string // the customer's collection, say "users"
	Actor      Actor
	Scope      string // "read" or "full"
	Reason     string
	StartedAt  time.Time
	ExpiresAt  time.Time // the absolute cap
}

// ReadOnly reports whether the impersonation may only read.
func (i Impersonation) ReadOnly() bool { return i.Scope == token.ScopeRead }

type ctxKey struct{}

// FromContext returns the impersonation the middleware found for the
// request; false when it is not impersonated.
func FromContext(ctx context.Context) (Impersonation, bool) {
	imp, ok := ctx.Value(ctxKey{}).(Impersonation)
	return imp, ok
}

// CookieName is the session cookie's name for the service's public URL.
func CookieName(publicURL string) string {
	if strings.HasPrefix(publicURL, "https://") {
		return "__Host-impersonation_session"
	}
	return "impersonation_session"
}

// Checker tells requests' impersonation; safe for concurrent use.
type Checker struct {
	iss, aud, cookie    string
	jwksURL, sessionURL string
	maxAge, timeout     time.Duration
	client              *http.Client
	readOnly            http.Handler
	log                 *slog.Logger
	keysMu              sync.Mutex
	keys                *token.PublicKeys
	keysAt, keysTried   time.Time
	keysFlight          chan struct{}
	mu                  sync.Mutex
	sessions            map[string]*answer
}

// New validates cfg (every problem at once) and returns a Checker. It
// makes no call: the JWKS is fetched on the first cookie.
func New(cfg Config) (*Checker, error) {
	var problems []error
	bad := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	iss := strings.TrimRight(cfg.PublicURL, "/")
	if !absoluteHTTP(iss) {
		bad("appsession: PublicURL %q is not an http(s) URL", cfg.PublicURL)
	}
	if cfg.Audience == "" {
		bad("appsession: Audience is required (the service's IMPERSONATOR_AUDIENCE, by default its IMPERSONATOR_APP_URL)")
	}
	service := strings.TrimRight(cfg.ServiceURL, "/")
	if service == "" {
		service = iss
	} else if !absoluteHTTP(service) {
		bad("appsession: ServiceURL %q is not an http(s) URL", cfg.ServiceURL)
	}
	maxAge, timeout := cfg.MaxAge, cfg.Timeout
	if maxAge == 0 {
		maxAge = DefaultMaxAge
	}
	if timeout == 0 {
		timeout = min(DefaultTimeout, maxAge/2)
	}
	if maxAge < 0 || maxAge > MaxMaxAge {
		bad("appsession: MaxAge %s is outside (0, %s]", maxAge, MaxMaxAge)
	}
	if timeout <= 0 || timeout >= maxAge {
		bad("appsession: Timeout %s must be positive and shorter than MaxAge %s", timeout, maxAge)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	c := &Checker{
		iss: iss, aud: cfg.Audience, cookie: CookieName(iss),
		jwksURL: service + "/.well-known/jwks.json", sessionURL: service + "/impersonation/session",
		maxAge: maxAge, timeout: timeout, client: cfg.Client, readOnly: cfg.ReadOnly, log: cfg.Log,
		sessions: map[string]*answer{},
	}
	if c.client == nil {
		c.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if c.readOnly == nil {
		c.readOnly = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "read-only impersonation: changes are not allowed", http.StatusForbidden)
		})
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c, nil
}

func absoluteHTTP(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// Middleware puts the request's impersonation in its context (see
// FromContext) and answers a change under a read-only impersonation with
// Config.ReadOnly instead of calling next. A request that is not
// impersonated reaches next unchanged.
func (c *Checker) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		imp, ok := c.Check(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, imp))
		if imp.ReadOnly() && Change(r) {
			c.readOnly.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Change reports whether r may change something: a method other than GET,
// HEAD and OPTIONS (exactly so spelled), or a method-override header
// (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override) naming one,
// since frameworks that honour those would run the request as a change.
func Change(r *http.Request) bool {
	if !safeMethod(r.Method) {
		return true
	}
	for _, h := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"} {
		for _, v := range r.Header.Values(h) {
			if !safeMethod(strings.TrimSpace(v)) {
				return true
			}
		}
	}
	return false
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// Check returns r's impersonation: false when r has no session cookie, when
// the cookie does not verify, or when the service did not confirm the
// session live within MaxAge (ended, or the service could not be asked).
func (c *Checker) Check(r *http.Request) (Impersonation, bool) {
	ck, err := r.Cookie(c.cookie)
	if err != nil || ck.Value == "" || len(ck.Value) > token.MaxTokenBytes {
		return Impersonation{}, false
	}
	ctx := context.WithoutCancel(r.Context()) // a call may serve other requests too
	claims, err := c.verify(ctx, ck.Value)
	if err != nil {
		c.log.DebugContext(r.Context(), "impersonation cookie refused", "error", err)
		return Impersonation{}, false
	}
	return c.live(ctx, claims, ck.Value)
}

// verify checks the cookie against the JWKS, fetching it first when it is
// missing or old, and again (at most once per JWKSCooldown) for a kid it
// does not hold.
func (c *Checker) verify(ctx context.Context, raw string) (*token.Claims, error) {
	keys, err := c.jwks(ctx, false)
	if err != nil {
		return nil, err
	}
	claims, err := keys.Verify(token.Session, raw, c.iss, c.aud, time.Now())
	if !errors.Is(err, token.ErrUnknownKey) {
		return claims, err
	}
	if keys, err = c.jwks(ctx, true); err != nil {
		return nil, err
	}
	return keys.Verify(token.Session, raw, c.iss, c.aud, time.Now())
}

// jwks returns the JWKS, fetching it when there is none (at most once a
// second), when it is older than JWKSMaxAge or when unknownKid (at most once
// per JWKSCooldown); a failed refresh keeps the keys it had. Concurrent
// callers share one fetch.
func (c *Checker) jwks(ctx context.Context, unknownKid bool) (*token.PublicKeys, error) {
	c.keysMu.Lock()
	now := time.Now()
	need, wait := unknownKid || now.Sub(c.keysAt) > JWKSMaxAge, JWKSCooldown
	if c.keys == nil {
		need, wait = true, time.Second
	}
	if flight := c.keysFlight; flight != nil && need {
		c.keysMu.Unlock()
		<-flight // another request is fetching: its answer is as fresh
		c.keysMu.Lock()
	} else if need && now.Sub(c.keysTried) >= wait {
		flight := make(chan struct{})
		c.keysFlight, c.keysTried = flight, now
		c.keysMu.Unlock()
		keys, err := c.fetchJWKS(ctx)
		c.keysMu.Lock()
		if err == nil {
			c.keys, c.keysAt = keys, time.Now()
		} else {
			c.log.WarnContext(ctx, "impersonation: fetching the JWKS failed; a cookie whose key is not known is not impersonated", "url", c.jwksURL, "error", err)
		}
		c.keysFlight = nil
		close(flight)
	}
	keys := c.keys
	c.keysMu.Unlock()
	if keys == nil {
		return nil, errors.New("no JWKS: the service's could not be fetched")
	}
	return keys, nil
}

func (c *Checker) fetchJWKS(ctx context.Context) (*token.PublicKeys, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.jwksURL, nil)
	if err != nil {
		return nil, err
	}
	res, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes))
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS: status %d", res.StatusCode)
	}
	return token.ParseJWKS(body)
}

// The states of a session, as the service last answered.
type state int

const (
	unknown state = iota // the service could not be asked: not impersonating
	alive
	ended
)

// answer is the service's answer about one session.
type answer struct {
	done      chan struct{} // closed once the fields below are set
	requested time.Time     // when the call was sent: the answer is at least this fresh
	until     time.Time     // reused until then
	state     state
	imp       Impersonation
}

// live asks the service whether the session of claims is live, reusing an
// answer requested within MaxAge (an ended session's answer, until its
// expiry). Concurrent requests of one session share one call.
func (c *Checker) live(ctx context.Context, claims *token.Claims, raw string) (Impersonation, bool) {
	c.mu.Lock()
	a := c.sessions[claims.SID]
	if a == nil || a.expired(time.Now()) {
		a = &answer{done: make(chan struct{}), requested: time.Now()}
		c.store(claims.SID, a)
		c.mu.Unlock()
		c.ask(ctx, a, claims, raw)
	} else {
		c.mu.Unlock()
		<-a.done
	}
	// The bound, checked at the decision: the confirmation was requested
	// at most MaxAge ago, so the service gave it at most MaxAge ago.
	if a.state != alive || time.Since(a.requested) > c.maxAge {
		return Impersonation{}, false
	}
	return a.imp, true
}

// expired reports whether a finished answer may no longer be reused. An
// answer still awaited is joined.
func (a *answer) expired(now time.Time) bool { return a.finished() && !now.Before(a.until) }

func (a *answer) finished() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// store caches a under sid, making room first: answers past their reuse
// go and, if that is not enough, every finished answer.
func (c *Checker) store(sid string, a *answer) {
	if len(c.sessions) >= maxCached {
		now := time.Now()
		for k, old := range c.sessions {
			if old.expired(now) {
				delete(c.sessions, k)
			}
		}
		if len(c.sessions) >= maxCached {
			for k, old := range c.sessions {
				if old.finished() {
					delete(c.sessions, k)
				}
			}
		}
	}
	c.sessions[sid] = a
}

// ask calls the session endpoint with the cookie and records the answer in
// a: alive (200 naming this session), ended (401: reused until the cookie
// expires, since an ended session never comes back), or unknown (anything
// else, reused for MaxAge).
func (c *Checker) ask(ctx context.Context, a *answer, claims *token.Claims, raw string) {
	defer close(a.done)
	a.until = a.requested.Add(c.maxAge)
	imp, code, err := c.introspect(ctx, raw)
	switch {
	case err == nil && code == http.StatusOK:
		if imp.SessionID != claims.SID || imp.Subject != claims.Subject || imp.Actor.ID != claims.Act.Sub {
			c.log.WarnContext(ctx, "impersonation: the service answered for another session; not impersonating", "sid", claims.SID)
			return
		}
		if claims.Scope == token.ScopeRead {
			imp.Scope = token.ScopeRead // the stricter of the two
		}
		a.state, a.imp = alive, imp
	case err == nil && code == http.StatusUnauthorized:
		a.state = ended
		if exp := claims.ExpiresAt.Add(token.Leeway); exp.After(a.until) {
			a.until = exp
		}
	default:
		if err == nil {
			err = fmt.Errorf("status %d", code)
		}
		c.log.WarnContext(ctx, "impersonation: the session check failed; not impersonating", "sid", claims.SID, "error", err)
	}
}

// sessionJSON is the service's answer (DESIGN.md 3.4, with scope).
type sessionJSON struct {
	SessionID  string `json:"session_id"`
	Subject    string `json:"subject"`
	Collection string `json:"collection"`
	Actor      struct {
		ID    string `json:"id"`
		Email string `json:"email"`
	} `json:"actor"`
	Reason    string    `json:"reason"`
	StartedAt time.Time `json:"started_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Scope     string    `json:"scope"`
}

// introspect is GET /impersonation/session with the cookie alone (none of
// the app's other cookies), under the Timeout.
func (c *Checker) introspect(ctx context.Context, raw string) (Impersonation, int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.sessionURL, nil)
	if err != nil {
		return Impersonation{}, 0, err
	}
	req.AddCookie(&http.Cookie{Name: c.cookie, Value: raw})
	req.Header.Set("Accept", "application/json")
	res, err := c.client.Do(req)
	if err != nil {
		return Impersonation{}, 0, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAnswerBytes))
	if err != nil || res.StatusCode != http.StatusOK {
		return Impersonation{}, res.StatusCode, err
	}
	var s sessionJSON
	if err := json.Unmarshal(body, &s); err != nil {
		return Impersonation{}, 0, fmt.Errorf("session answer: %w", err)
	}
	scope := s.Scope
	if scope != token.ScopeFull {
		scope = token.ScopeRead // what is not full is read-only
	}
	return Impersonation{
		SessionID: s.SessionID, Subject: s.Subject, Collection: s.Collection,
		Actor: Actor{ID: s.Actor.ID, Email: s.Actor.Email}, Scope: scope, Reason: s.Reason,
		StartedAt: s.StartedAt, ExpiresAt: s.ExpiresAt,
	}, http.StatusOK, nil
}
