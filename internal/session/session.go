// Package session serves what a customer app needs to see an impersonation
// session: the session cookie, the introspection and forward-auth endpoint,
// logout, the banner, the admin API over sessions, and the sweeper that
// records the end of sessions nobody touches again.
package session

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// Cookie is how the session cookie is set: HttpOnly, Path=/; Secure with
// an https public URL (then with the __Host- prefix); SameSite=None in
// webhook and auto delivery (the webhook's cookie is set by the admin
// panel's cross-site request) and Lax in redirect delivery (first-party);
// a session the start page opens is Lax in any delivery (FirstParty).
// SameSite=None is always Secure too, even on http://localhost: browsers
// drop SameSite=None cookies that are not Secure, and accept Secure ones
// from localhost.
type Cookie struct {
	Name     string
	secure   bool
	sameSite http.SameSite
}

// CookieName is the session cookie's name without the __Host- prefix.
const CookieName = "impersonation_session"

// NewCookie returns the cookie spec for the public URL and delivery.
func NewCookie(publicURL string, d config.Delivery) Cookie {
	c := Cookie{Name: CookieName, sameSite: http.SameSiteLaxMode}
	if strings.HasPrefix(publicURL, "https://") {
		c.Name, c.secure = "__Host-"+CookieName, true
	}
	if d != config.Redirect {
		c.sameSite, c.secure = http.SameSiteNoneMode, true
	}
	return c
}

// FirstParty is the cookie spec of a session the start page opens (a
// first-party form post, in auto or redirect delivery): SameSite=Lax, and
// Secure only with an https public URL. Only the webhook's cross-site
// login needs SameSite=None.
func (c Cookie) FirstParty() Cookie {
	c.sameSite, c.secure = http.SameSiteLaxMode, strings.HasPrefix(c.Name, "__Host-")
	return c
}

// Set returns the cookie carrying value until expires.
func (c Cookie) Set(value string, expires time.Time) *http.Cookie {
	return &http.Cookie{Name: c.Name, Value: value, Path: "/", Expires: expires, HttpOnly: true, Secure: c.secure, SameSite: c.sameSite}
}

// Clear returns the cookie that removes it.
func (c Cookie) Clear() *http.Cookie {
	return &http.Cookie{Name: c.Name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: c.secure, SameSite: c.sameSite}
}

// Verifier checks session tokens.
type Verifier interface {
	Verify(k token.Kind, raw string) (*token.Claims, error)
}

// sessionEnder is the store's one step that ends a session with its event
// and the lapse events it supersedes.
type sessionEnder interface {
	End(ctx context.Context, sess store.Session, ev audit.Encoded, lapses store.LapseEvents) error
}

// Store is what sessions need of Redis.
type Store interface {
	sessionEnder
	Touch(ctx context.Context, sid string) (store.Session, store.Lapse, error)
	GetSession(ctx context.Context, sid string) (store.Session, error)
	EndLapsed(ctx context.Context, sess store.Session, lapses store.LapseEvents) (store.Lapse, error)
}

// Handlers serve the session routes. Build them with New.
type Handlers struct {
	log     *slog.Logger
	store   Store
	verify  Verifier
	cookie  Cookie
	events  audit.Encoder
	now     func() time.Time
	origins []string // origins allowed to end a session by its cookie
	cache   *Cache   // nil: every check reads Redis
	// activity records the requests of impersonated sessions (nil: none).
	activity *Recorder
	claims   *verifiedCache
	// Unused is called for each session ended as never used.
	unused     func()
	unusedMu   sync.Mutex
	unusedLast time.Time
}

// Options configure New.
type Options struct {
	Log      *slog.Logger
	Store    Store
	Verifier Verifier
	Cookie   Cookie
	Events   audit.Encoder
	Now      func() time.Time
	// Origins may end a session with its cookie (logout): the app's and
	// the public URL's. A request without Origin (not a browser) may too.
	Origins []string
	Unused  func()
	// Cache, when set, serves live sessions from memory (see Cache); its
	// Run must be running.
	Cache *Cache
	// Activity, when set, records each forward-auth request of a session
	// (the activity trail); its Run must be running.
	Activity *Recorder
}

// New returns the session handlers.
func New(o Options) *Handlers {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Handlers{log: o.Log, store: o.Store, verify: o.Verifier, cookie: o.Cookie, events: o.Events, now: o.Now,
		origins: o.Origins, claims: newVerifiedCache(10000), cache: o.Cache, unused: o.Unused, activity: o.Activity}
}

// verifiedCache remembers session cookies whose signature and claims were
// verified, keyed by their SHA-256 (the cookie itself is not kept), until
// the cookie's exp. The server-side record is still checked on every
// request: the cache saves the signature check, not the revocation check.
// Bounded: when full, it is emptied (a rare, cheap reset).
type verifiedCache struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]*token.Claims
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, m: make(map[[32]byte]*token.Claims)}
}

func (v *verifiedCache) get(k [32]byte, now time.Time) (*token.Claims, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.m[k]
	if ok && !now.Before(c.ExpiresAt.Time) {
		delete(v.m, k)
		return nil, false
	}
	return c, ok
}

func (v *verifiedCache) put(k [32]byte, c *token.Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.m) >= v.max {
		clear(v.m)
	}
	v.m[k] = c
}

// Claims returns the verified claims of r's session cookie.
func (h *Handlers) Claims(r *http.Request) (*token.Claims, bool) {
	ck, err := r.Cookie(h.cookie.Name)
	if err != nil || ck.Value == "" || len(ck.Value) > token.MaxTokenBytes {
		return nil, false
	}
	k := sha256.Sum256([]byte(ck.Value))
	if c, ok := h.claims.get(k, h.now()); ok {
		return c, true
	}
	c, err := h.verify.Verify(token.Session, ck.Value)
	if err != nil {
		return nil, false
	}
	h.claims.put(k, c)
	return c, true
}

// Live returns the session of r's cookie, checked against its server-side
// record (one Redis round trip) and marked seen. A session this request
// finds lapsed is ended here, with its event, and is ErrNoSession.
func (h *Handlers) Live(r *http.Request) (store.Session, error) {
	sess, _, err := h.live(r)
	return sess, err
}

// live is Live, with the session's encoded introspection answer when the
// cache holds or took it (nil otherwise).
func (h *Handlers) live(r *http.Request) (store.Session, []byte, error) {
	c, ok := h.Claims(r)
	if !ok {
		return store.Session{}, nil, store.ErrNoSession
	}
	var mark checkMark
	if h.cache != nil {
		now := h.now()
		sess, answer, write, ok := h.cache.get(c.SID, now)
		if ok && !write {
			return sess, answer, nil // no Redis: the subscription would have told of its end
		}
		mark = h.cache.mark()
	}
	tctx, cancel := context.WithTimeout(r.Context(), redisTimeout)
	defer cancel()
	sess, lapse, err := h.store.Touch(tctx, c.SID)
	var answer []byte
	if h.cache != nil {
		if err != nil {
			h.cache.Drop(c.SID)
		} else if sess.Subject.ID == c.Subject && sess.Actor.ID == c.Act.Sub {
			answer, _ = encodeAnswer(sess) // nil on failure: the caller encodes
			h.cache.put(sess, answer, h.now(), mark)
		}
	}
	if lapse != "" {
		h.EndLapsed(r.Context(), sess, Request(r))
	}
	if err != nil {
		return store.Session{}, nil, err
	}
	if sess.Subject.ID != c.Subject || sess.Actor.ID != c.Act.Sub {
		return store.Session{}, nil, store.ErrNoSession
	}
	return sess, answer, nil
}

// auditTimeout bounds an end's write, which outlives a client that hung up.
const auditTimeout = 3 * time.Second

// redisTimeout bounds the session check's Redis round trip.
const redisTimeout = 3 * time.Second

// UnusedDetail is the detail of a session ended as never used.
const UnusedDetail = "never used: the browser probably blocked the third-party cookie; use IMPERSONATOR_DELIVERY=auto or redirect"

// RequestInfo is what an event records of the request that caused it.
type RequestInfo struct {
	IP, UserAgent, RequestID string
	// Requests, on a session's end, is its activity trail's count.
	Requests *int64
}

// Request returns r's RequestInfo.
func Request(r *http.Request) RequestInfo {
	return RequestInfo{IP: httpx.ClientIP(r.Context()), UserAgent: r.UserAgent(), RequestID: httpx.RequestID(r.Context())}
}

// Event returns the event of sess of type typ, caused by the request ri.
func Event(typ audit.Type, sess store.Session, ri RequestInfo, detail string) audit.Event {
	return audit.Event{
		Type: typ, Actor: sess.Actor, Requester: sess.Requester, Subject: sess.Subject, Reason: sess.Reason, Scope: sess.Scope,
		TokenID: sess.TokenID, SessionID: sess.ID, IP: ri.IP, UserAgent: ri.UserAgent, RequestID: ri.RequestID, Detail: detail,
		Requests: ri.Requests,
	}
}

// Lapses returns the events of each way sess can lapse.
func Lapses(enc audit.Encoder, sess store.Session, ri RequestInfo) (store.LapseEvents, error) {
	var l store.LapseEvents
	var err error
	for _, x := range []struct {
		dst    *audit.Encoded
		detail string
	}{{&l.Idle, "idle timeout"}, {&l.Cap, "reached its absolute cap"}, {&l.Unused, UnusedDetail}} {
		if *x.dst, err = enc.Encode(Event(audit.Ended, sess, ri, x.detail)); err != nil {
			return l, err
		}
	}
	return l, nil
}

// EndLapsed ends a session found lapsed, recording its end (session.ended
// with its detail) in the same step. It reports whether it ended it.
func (h *Handlers) EndLapsed(ctx context.Context, sess store.Session, ri RequestInfo) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if ri.Requests == nil {
		ri.Requests = h.activity.requestsOf(ctx, sess.ID)
	}
	lapses, err := Lapses(h.events, sess, ri)
	if err == nil {
		var lapse store.Lapse
		lapse, err = h.store.EndLapsed(ctx, sess, lapses)
		h.drop(sess.ID)
		if lapse == store.LapseUnused {
			h.noteUnused(sess)
		}
	}
	if err != nil && !errors.Is(err, store.ErrNoSession) {
		h.log.ErrorContext(ctx, "end lapsed session", "error", err, "sid", sess.ID)
	}
	return err == nil
}

func (h *Handlers) noteUnused(sess store.Session) {
	if h.unused != nil {
		h.unused()
	}
	// The advice goes to the log at most once a minute.
	h.unusedMu.Lock()
	defer h.unusedMu.Unlock()
	if now := h.now(); now.Sub(h.unusedLast) >= time.Minute {
		h.unusedLast = now
		h.log.Warn("a session was never used: "+UnusedDetail, "sid", sess.ID)
	}
}

// answer is DESIGN.md 3.4's introspection answer.
type answer struct {
	SessionID  string    `json:"session_id"`
	Subject    string    `json:"subject"`
	Collection string    `json:"collection"`
	Actor      actorJSON `json:"actor"`
	Reason     string    `json:"reason"`
	StartedAt  time.Time `json:"started_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Scope      string    `json:"scope"` // extension: read or full
}

// Scope is sess's scope: full for a session opened before scopes.
func Scope(sess store.Session) string {
	if sess.Scope == "" {
		return token.ScopeFull
	}
	return sess.Scope
}

type actorJSON struct {
	ID    string `json:"id"`
	Email string `json:"email"`
}

// Session is introspection and forward-auth: 200 with the session and the
// X-Impersonation-Subject / X-Impersonation-Actor / X-Impersonation-Scope
// headers, or 401; 403 for a change (X-Forwarded-Method) under a read-only
// impersonation.
func (h *Handlers) Session(w http.ResponseWriter, r *http.Request) error {
	sess, body, err := h.live(r)
	if errors.Is(err, store.ErrNoSession) {
		h.clearStale(w, r)
		// Every ordinary request behind forward-auth gets this answer: not
		// worth an info line each.
		return &httpx.Error{Status: http.StatusUnauthorized, Message: "no_session", Level: slog.LevelDebug}
	}
	if err != nil {
		return httpx.Unavailable(err)
	}
	w.Header().Set("X-Impersonation-Subject", httpx.HeaderValue(sess.Subject.ID))
	w.Header().Set("X-Impersonation-Actor", httpx.HeaderValue(sess.Actor.Email))
	w.Header().Set("X-Impersonation-Scope", Scope(sess))
	if Scope(sess) == token.ScopeRead {
		if m, ok := readMethod(r.Header); !ok {
			// Forward-auth of a change (or of a method it cannot be sure
			// of) under a read-only impersonation: 403, which nginx's
			// auth_request and Traefik's ForwardAuth return to the
			// browser instead of passing the request on.
			h.record(r, sess.ID, DecisionDeny)
			return httpx.Errorf(http.StatusForbidden, "read_only", fmt.Errorf("read-only impersonation: method %.64q refused", m))
		}
	}
	if body == nil {
		if body, err = encodeAnswer(sess); err != nil {
			return err
		}
	}
	h.record(r, sess.ID, DecisionAllow)
	httpx.WriteEncoded(w, http.StatusOK, body)
	return nil
}

// clearStale removes a session cookie that names no live session (ended,
// revoked, lapsed, or not ours): the browser stops sending it, so an app
// that verifies the cookie's signature alone stops impersonating too, and
// the banner and the app agree. A request without the cookie gets no
// Set-Cookie; a 503 (Redis down) never clears a cookie. With an http
// public URL the webhook's cookie (Secure, SameSite=None) and the start
// page's (Lax, not Secure) differ, and a browser may refuse a clearing
// line of the other kind, so both lines are sent.
func (h *Handlers) clearStale(w http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(h.cookie.Name); err != nil {
		return
	}
	clear := h.cookie.Clear()
	http.SetCookie(w, clear)
	if fp := h.cookie.FirstParty().Clear(); fp.Secure != clear.Secure {
		http.SetCookie(w, fp)
	}
	w.Header().Set("Cache-Control", "no-store")
}

// encodeAnswer encodes sess's introspection answer (the cache keeps it
// with the session: it is the same on every request).
func encodeAnswer(sess store.Session) ([]byte, error) {
	return httpx.EncodeJSON(answer{
		SessionID: sess.ID, Subject: sess.Subject.ID, Collection: sess.Subject.Collection,
		Actor:  actorJSON{ID: sess.Actor.ID, Email: sess.Actor.Email},
		Reason: sess.Reason, StartedAt: sess.StartedAt, ExpiresAt: sess.ExpiresAt, Scope: Scope(sess),
	})
}

// methodHeaders are where forward-auth proxies pass the method of the
// request they ask about: X-Forwarded-Method (Traefik ForwardAuth, Caddy
// forward_auth, the README's nginx block) and X-Original-Method
// (ingress-nginx, and nginx auth_request blocks written for it).
var methodHeaders = []string{"X-Forwarded-Method", "X-Original-Method"}

// readMethod reports whether the method a forward-auth proxy passes is
// surely a read (GET, HEAD or OPTIONS), and returns what it read. No method
// header at all is a read (introspection, the banner). Anything ambiguous
// is not: one header repeated, a comma list, an empty value, or the two
// headers naming different methods, since the app may act on another
// value than the one judged here.
func readMethod(h http.Header) (string, bool) {
	method := ""
	for _, name := range methodHeaders {
		vs := h.Values(name)
		switch {
		case len(vs) == 0:
			continue
		case len(vs) > 1:
			return strings.Join(vs, ", "), false
		}
		v := strings.TrimSpace(vs[0])
		if v == "" || strings.Contains(v, ",") || (method != "" && !strings.EqualFold(v, method)) {
			return strings.Join(append([]string{method}, vs[0]), " | "), false
		}
		method = v
	}
	switch strings.ToUpper(method) {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions:
		return method, true
	}
	return method, false
}

// Logout ends the session of r's cookie (session.ended) and clears the
// cookie. It answers 204 whether or not there was a session. A browser
// request from a foreign origin is refused (403): another site cannot end
// someone's session.
func (h *Handlers) Logout(w http.ResponseWriter, r *http.Request) error {
	if !h.sameParty(r) {
		return httpx.Errorf(http.StatusForbidden, "forbidden", errors.New("logout from a foreign origin "+r.Header.Get("Origin")))
	}
	if c, ok := h.Claims(r); ok {
		if err := h.end(r, c.SID, audit.Ended, "logout"); err != nil {
			return httpx.Unavailable(err)
		}
	}
	http.SetCookie(w, h.cookie.Clear())
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// end ends the live session sid with an event of typ; a session gone or
// lapsed meanwhile is not an error.
func (h *Handlers) end(r *http.Request, sid string, typ audit.Type, detail string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	sess, err := h.store.GetSession(ctx, sid)
	if errors.Is(err, store.ErrNoSession) {
		return nil
	}
	if err != nil {
		return err
	}
	ri := Request(r)
	ri.Requests = h.activity.requestsOf(ctx, sess.ID)
	err = endSession(ctx, h.store, h.events, h.cache, typ, sess, ri, detail)
	if err != nil && !errors.Is(err, store.ErrNoSession) {
		return err
	}
	return nil
}

// endSession ends sess with an event of typ, and the lapse events it
// supersedes, in one store step, and drops it from cache (nil: none) at
// once; other instances drop it on the published end. A session that
// ended meanwhile is store.ErrNoSession.
func endSession(ctx context.Context, st sessionEnder, enc audit.Encoder, cache *Cache, typ audit.Type, sess store.Session, ri RequestInfo, detail string) error {
	ev, err := enc.Encode(Event(typ, sess, ri, detail))
	if err != nil {
		return err
	}
	lapses, err := Lapses(enc, sess, ri)
	if err != nil {
		return err
	}
	err = st.End(ctx, sess, ev, lapses)
	if cache != nil {
		cache.Drop(sess.ID)
	}
	return err
}

// drop forgets sid in this instance's cache, if any.
func (h *Handlers) drop(sid string) {
	if h.cache != nil {
		h.cache.Drop(sid)
	}
}

// sameParty reports whether r may act with the session cookie: a request
// with no Origin (not a browser, or a same-origin GET) unless the browser
// says it is cross-site, or one from an allowed origin.
func (h *Handlers) sameParty(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return r.Header.Get("Sec-Fetch-Site") != "cross-site"
	}
	for _, a := range h.origins {
		if SameOrigin(o, a) {
			return true
		}
	}
	return false
}

// Origin returns the origin of u as a browser sends it in an Origin header:
// scheme://host[:port], lower-case, without the scheme's default port, so
// that "https://App.example.com:443/" and "https://app.example.com" are one.
func Origin(u string) string {
	p, err := url.Parse(strings.TrimSpace(u))
	if err != nil || p.Scheme == "" || p.Host == "" {
		return ""
	}
	scheme, host := strings.ToLower(p.Scheme), strings.ToLower(p.Hostname())
	port := p.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host
}

// SameOrigin reports whether the Origin header o names origin, both in
// Origin's one spelling.
func SameOrigin(o, origin string) bool { return origin != "" && Origin(o) == Origin(origin) }
