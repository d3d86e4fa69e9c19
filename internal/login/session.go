package login

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// cookieSpec is how the session cookie is set: HttpOnly, Path=/; Secure
// with an https public URL (then with the __Host- prefix); SameSite=None in
// webhook delivery (the cookie is set by the admin panel's cross-site
// request) and Lax in redirect delivery (first-party). SameSite=None is
// always Secure too, even on http://localhost: browsers drop SameSite=None
// cookies that are not Secure, and accept Secure ones from localhost.
type cookieSpec struct {
	name     string
	secure   bool
	sameSite http.SameSite
}

// CookieName is the session cookie's name without the __Host- prefix.
const CookieName = "impersonation_session"

func newCookieSpec(publicURL string, d config.Delivery) cookieSpec {
	c := cookieSpec{name: CookieName, sameSite: http.SameSiteLaxMode}
	https := strings.HasPrefix(publicURL, "https://")
	if https {
		c.name, c.secure = "__Host-"+CookieName, true
	}
	if d == config.Webhook {
		c.sameSite, c.secure = http.SameSiteNoneMode, true
	}
	return c
}

func (c cookieSpec) set(value string, expires time.Time) *http.Cookie {
	return &http.Cookie{Name: c.name, Value: value, Path: "/", Expires: expires, HttpOnly: true, Secure: c.secure, SameSite: c.sameSite}
}

func (c cookieSpec) clear() *http.Cookie {
	return &http.Cookie{Name: c.name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: c.secure, SameSite: c.sameSite}
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

// claims returns the verified claims of r's session cookie.
func (h *Handlers) claims(r *http.Request) (*token.Claims, bool) {
	ck, err := r.Cookie(h.cookie.name)
	if err != nil || ck.Value == "" || len(ck.Value) > token.MaxTokenBytes {
		return nil, false
	}
	k := sha256.Sum256([]byte(ck.Value))
	now := h.o.Now()
	if c, ok := h.cache.get(k, now); ok {
		return c, true
	}
	c, err := h.o.Verifier.Verify(token.Session, ck.Value)
	if err != nil {
		return nil, false
	}
	h.cache.put(k, c)
	return c, true
}

// live returns the session of r's cookie, checked against its server-side
// record (one Redis round trip) and marked seen.
func (h *Handlers) live(r *http.Request) (store.Session, error) {
	c, ok := h.claims(r)
	if !ok {
		return store.Session{}, store.ErrNoSession
	}
	sess, lapsed, err := h.o.Store.Touch(r.Context(), c.SID, h.o.SessionIdle)
	if lapsed {
		h.endLapsed(r, sess)
	}
	if err != nil {
		return store.Session{}, err
	}
	if sess.Subject.ID != c.Subject || sess.Actor.ID != c.Act.Sub {
		return store.Session{}, store.ErrNoSession
	}
	return sess, nil
}

// endLapsed audits a session that this request found idle or past its cap.
func (h *Handlers) endLapsed(r *http.Request, sess store.Session) {
	detail := "idle timeout"
	if !h.o.Now().Before(sess.ExpiresAt) {
		detail = "reached its absolute cap"
	}
	ev := sessionEvent(r, audit.Ended, sess, detail)
	if _, err := h.o.Store.Append(r.Context(), ev); err != nil {
		h.o.Log.ErrorContext(r.Context(), "audit lapsed session", "error", err, "sid", sess.ID)
	}
}

func sessionEvent(r *http.Request, typ audit.Type, sess store.Session, detail string) audit.Event {
	return audit.Event{
		Type: typ, Actor: sess.Actor, Requester: sess.Requester, Subject: sess.Subject, Reason: sess.Reason,
		TokenID: sess.TokenID, SessionID: sess.ID, IP: httpx.ClientIP(r.Context()), UserAgent: r.UserAgent(),
		RequestID: httpx.RequestID(r.Context()), Detail: detail,
	}
}

// sessionAnswer is DESIGN.md 3.4's introspection answer.
type sessionAnswer struct {
	SessionID  string    `json:"session_id"`
	Subject    string    `json:"subject"`
	Collection string    `json:"collection"`
	Actor      actorJSON `json:"actor"`
	Reason     string    `json:"reason"`
	StartedAt  time.Time `json:"started_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// Session is introspection and forward-auth: 200 with the session and the
// X-Impersonation-Subject / X-Impersonation-Actor headers, or 401.
func (h *Handlers) Session(w http.ResponseWriter, r *http.Request) {
	sess, err := h.live(r)
	if errors.Is(err, store.ErrNoSession) {
		httpx.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "no_session"})
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("X-Impersonation-Subject", sess.Subject.ID)
	w.Header().Set("X-Impersonation-Actor", sess.Actor.Email)
	httpx.WriteJSON(w, http.StatusOK, sessionAnswer{
		SessionID: sess.ID, Subject: sess.Subject.ID, Collection: sess.Subject.Collection,
		Actor:  actorJSON{ID: sess.Actor.ID, Email: sess.Actor.Email},
		Reason: sess.Reason, StartedAt: sess.StartedAt, ExpiresAt: sess.ExpiresAt,
	})
}

// Logout ends the session of r's cookie (session.ended) and clears the
// cookie. It answers 204 whether or not there was a session.
func (h *Handlers) Logout(w http.ResponseWriter, r *http.Request) {
	if c, ok := h.claims(r); ok {
		sess, err := h.o.Store.GetSession(r.Context(), c.SID)
		switch {
		case errors.Is(err, store.ErrNoSession):
		case err != nil:
			h.fail(w, r, err)
			return
		default:
			err := h.o.Store.EndSession(r.Context(), sess, sessionEvent(r, audit.Ended, sess, "logout"))
			if err != nil && !errors.Is(err, store.ErrNoSession) {
				h.fail(w, r, err)
				return
			}
		}
	}
	http.SetCookie(w, h.cookie.clear())
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
