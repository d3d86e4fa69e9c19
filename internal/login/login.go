// Package login redeems impersonation tokens into sessions and serves
// everything a customer app needs to see them: the session cookie, the
// introspection and forward-auth endpoint, logout, the redirect-delivery
// start page, the banner, and the admin API over sessions.
package login

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// Store is what login needs of Redis.
type Store interface {
	Lookup(ctx context.Context, jti string) (store.Grant, store.State, error)
	Redeem(ctx context.Context, jti string, sess store.Session, idle time.Duration, redeemed audit.Event, rejected func(store.State) audit.Event) (bool, store.State, error)
	Touch(ctx context.Context, sid string, idle time.Duration) (store.Session, bool, error)
	GetSession(ctx context.Context, sid string) (store.Session, error)
	EndSession(ctx context.Context, sess store.Session, ev audit.Event) error
	Sessions(ctx context.Context, adminID string) ([]store.Session, error)
	Append(ctx context.Context, ev audit.Event) (string, error)
	Allow(ctx context.Context, n int, window time.Duration, parts ...string) (bool, time.Duration, error)
	Count(ctx context.Context, parts ...string) (int, error)
}

// Issuer signs session tokens.
type Issuer interface {
	Issue(k token.Kind, c token.Claims, ttl time.Duration) (string, *token.Claims, error)
}

// Verifier checks impersonation and session tokens.
type Verifier interface {
	Verify(k token.Kind, raw string) (*token.Claims, error)
}

// Options configure the handlers.
type Options struct {
	Log         *slog.Logger
	Store       Store
	Issuer      Issuer
	Verifier    Verifier
	Now         func() time.Time
	PublicURL   string
	AppURL      string
	Delivery    config.Delivery
	SessionTTL  time.Duration
	SessionIdle time.Duration
	LoginRate   config.Rate
}

// Handlers serve the login routes. Build them with New.
type Handlers struct {
	o      Options
	cookie cookieSpec
	cache  *verifiedCache
}

// New returns the handlers for o.
func New(o Options) *Handlers {
	return &Handlers{o: o, cookie: newCookieSpec(o.PublicURL, o.Delivery), cache: newVerifiedCache(10000)}
}

// maxLoginBody caps the login request: a token and little else.
const maxLoginBody = 8 << 10

// errInvalid is the only answer a failed redemption gets.
func writeInvalid(w http.ResponseWriter) {
	httpx.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
}

func writeUnavailable(w http.ResponseWriter) {
	httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "unavailable"})
}

// Login redeems a token: JSON {"token":…} (the admin panel's webhook) or a
// form token=… (the redirect start page).
func (h *Handlers) Login(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ip := httpx.ClientIP(ctx)
	if rate := h.o.LoginRate; rate.N > 0 {
		n, err := h.o.Store.Count(ctx, "rate", "login", ip)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if n >= rate.N {
			w.Header().Set("Retry-After", strconv.Itoa(int(rate.Per.Seconds())))
			httpx.WriteJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too_many_requests"})
			h.o.Log.WarnContext(ctx, "login rate limit reached", "ip", ip, "request_id", httpx.RequestID(ctx), "limit", rate.String())
			return
		}
	}
	ev := audit.Event{IP: ip, UserAgent: r.UserAgent(), RequestID: httpx.RequestID(ctx)}
	raw, form, err := readToken(w, r)
	if err != nil {
		h.reject(w, r, ev, "malformed request: "+err.Error())
		return
	}
	c, err := h.o.Verifier.Verify(token.Impersonation, raw)
	if err != nil {
		h.reject(w, r, ev, "invalid token: "+err.Error())
		return
	}
	ev.TokenID = c.ID
	ev.Actor = audit.Actor{ID: c.Act.Sub, Email: c.Act.Email}
	ev.Subject = audit.Subject{Collection: c.Collection, ID: c.Subject}
	g, st, err := h.o.Store.Lookup(ctx, c.ID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if st != store.Unknown {
		if g.Subject != ev.Subject || g.Actor.ID != ev.Actor.ID {
			h.reject(w, r, ev, "token and its server-side grant disagree")
			return
		}
		ev.Actor, ev.Requester, ev.Reason = g.Actor, g.Requester, g.Reason
	}

	sid := token.NewJTI()
	sc := token.Claims{Act: token.Actor{Sub: ev.Actor.ID, Email: ev.Actor.Email}, Collection: ev.Subject.Collection, SID: sid}
	sc.Subject = ev.Subject.ID
	cookieJWT, issued, err := h.o.Issuer.Issue(token.Session, sc, h.o.SessionTTL)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	sess := store.Session{ID: sid, Actor: ev.Actor, Requester: ev.Requester, Subject: ev.Subject, Reason: ev.Reason,
		TokenID: c.ID, StartedAt: issued.IssuedAt.Time, ExpiresAt: issued.ExpiresAt.Time, IP: ip}
	redeemed := ev
	redeemed.Type, redeemed.SessionID = audit.Redeemed, sid
	ok, _, err := h.o.Store.Redeem(ctx, c.ID, sess, h.o.SessionIdle, redeemed, func(st store.State) audit.Event {
		rej := ev
		rej.Type = audit.Rejected
		if st == store.Consumed {
			rej.Detail = "replayed: token already redeemed"
		} else {
			rej.Detail = "unknown token id: never minted here, or expired in the store"
		}
		return rej
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !ok {
		h.countFailure(ctx, ip)
		writeInvalid(w)
		return
	}
	h.o.Log.InfoContext(ctx, "impersonation redeemed", "request_id", ev.RequestID, "jti", c.ID, "sid", sid,
		"actor", ev.Actor.ID, "subject", ev.Subject.ID)
	http.SetCookie(w, h.cookie.set(cookieJWT, sess.ExpiresAt))
	if form {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, h.o.AppURL, http.StatusSeeOther)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, loginAnswer{
		Subject:    sess.Subject.ID,
		Actor:      actorJSON{ID: sess.Actor.ID, Email: sess.Actor.Email},
		ExpiresAt:  sess.ExpiresAt,
		RedirectTo: h.o.AppURL,
	})
}

type actorJSON struct {
	ID    string `json:"id"`
	Email string `json:"email"`
}

type loginAnswer struct {
	Subject    string    `json:"subject"`
	Actor      actorJSON `json:"actor"`
	ExpiresAt  time.Time `json:"expires_at"`
	RedirectTo string    `json:"redirect_to"`
}

// readToken reads the token of a JSON or form login request.
func readToken(w http.ResponseWriter, r *http.Request) (raw string, form bool, err error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		var body struct {
			Token string `json:"token"`
		}
		if err := httpx.Decode(w, r, &body, httpx.DecodeOptions{MaxBytes: maxLoginBody}); err != nil {
			return "", false, err
		}
		raw = body.Token
	case "application/x-www-form-urlencoded":
		r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
		if err := r.ParseForm(); err != nil {
			return "", true, errors.New("unreadable form")
		}
		raw, form = r.PostForm.Get("token"), true
	default:
		return "", false, fmt.Errorf("content type %q is neither JSON nor a form", mt)
	}
	if raw == "" {
		return "", form, errors.New("no token")
	}
	return raw, form, nil
}

// reject audits a failed redemption with its precise cause and answers the
// client the one generic 401. If the refusal cannot be audited, 503.
func (h *Handlers) reject(w http.ResponseWriter, r *http.Request, ev audit.Event, detail string) {
	ev.Type, ev.Detail = audit.Rejected, detail
	if _, err := h.o.Store.Append(r.Context(), ev); err != nil {
		h.fail(w, r, err)
		return
	}
	h.countFailure(r.Context(), ev.IP)
	writeInvalid(w)
}

// countFailure counts a failed redemption against the client IP's limit.
func (h *Handlers) countFailure(ctx context.Context, ip string) {
	if h.o.LoginRate.N == 0 {
		return
	}
	if _, _, err := h.o.Store.Allow(ctx, h.o.LoginRate.N, h.o.LoginRate.Per, "rate", "login", ip); err != nil {
		h.o.Log.ErrorContext(ctx, "count failed login", "error", err, "ip", ip)
	}
}

// fail answers 503 for a Redis failure (fail closed) and logs the cause
// once; other failures are 500.
func (h *Handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusServiceUnavailable
	if errors.Is(err, context.Canceled) {
		status = 499
	}
	httpx.LogError(h.o.Log, r, httpx.Errorf(status, "login unavailable", err))
	writeUnavailable(w)
}
