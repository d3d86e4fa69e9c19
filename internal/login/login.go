// Package login redeems impersonation tokens into sessions: the login
// endpoint (the admin panel's webhook, or the start page's form) and the
// redirect-delivery start page.
package login

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/session"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// Store is what login needs of Redis: a redemption is one atomic step
// (one round trip), a refusal of an unverifiable token one counted append.
type Store interface {
	Redeem(ctx context.Context, r store.Redemption) (bool, store.State, error)
	AppendCounted(ctx context.Context, ev audit.Encoded, l store.Limit) error
	AppendFolded(ctx context.Context, ev audit.Encoded, f store.Fold) (bool, error)
}

// Sessions reads the session cookie a request carries.
type Sessions interface {
	Claims(r *http.Request) (*token.Claims, bool)
}

// Issuer signs session tokens.
type Issuer interface {
	Issue(k token.Kind, c token.Claims, ttl time.Duration) (string, *token.Claims, error)
}

// Verifier checks impersonation tokens.
type Verifier interface {
	Verify(k token.Kind, raw string) (*token.Claims, error)
}

// Options configure the login handler.
type Options struct {
	Log         *slog.Logger
	Store       Store
	Issuer      Issuer
	Verifier    Verifier
	Cookie      session.Cookie
	Sessions    Sessions
	Events      audit.Encoder
	PublicURL   string
	AppURL      string
	SessionTTL  time.Duration
	SessionIdle time.Duration
	// Unused: a session not presented within it is ended as never used
	// (webhook delivery's operator signal); 0 off.
	Unused    time.Duration
	LoginRate config.Rate
}

// Handler serves POST /impersonation/login.
type Handler struct{ o Options }

// New returns the login handler.
func New(o Options) *Handler { return &Handler{o: o} }

// maxLoginBody caps the login request: a token and little else.
const maxLoginBody = 8 << 10

// auditTimeout bounds a refusal's audit write, which outlives a client that
// hung up.
const auditTimeout = 3 * time.Second

// errInvalid is the only answer a failed redemption gets: the cause goes
// to the audit log, never to the client.
func errInvalid(cause error) *httpx.Error {
	return httpx.Errorf(http.StatusUnauthorized, "invalid_token", cause)
}

// Login redeems a token: JSON {"token":…} (the admin panel's webhook) or a
// form token=… (the redirect start page).
func (h *Handler) Login(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	ev := audit.Event{IP: httpx.ClientIP(ctx), UserAgent: r.UserAgent(), RequestID: httpx.RequestID(ctx)}
	raw, form, err := readToken(w, r)
	var he *httpx.Error
	if errors.As(err, &he) && he.Status != http.StatusBadRequest && he.Status != http.StatusUnsupportedMediaType {
		return he // too large, client gone, timeout: not a token to judge
	}
	if form && !h.sameOrigin(r) {
		// A cross-site form post could log a victim's browser into a
		// session of the attacker's choosing: refused before the token
		// is even read, so it stays unredeemed.
		return httpx.Errorf(http.StatusForbidden, "forbidden", fmt.Errorf("form login from a foreign origin %q", r.Header.Get("Origin")))
	}
	if err != nil {
		msg := err.Error()
		if he != nil {
			msg = he.Message
		}
		return h.reject(r, ev, "malformed request: "+msg)
	}
	c, err := h.o.Verifier.Verify(token.Impersonation, raw)
	if err != nil {
		return h.reject(r, ev, "invalid token: "+err.Error())
	}
	// The token is validly signed: nothing from here on is counted by the
	// failure limiter, since an attacker cannot make such a token.
	//
	// The session and the events are built from the token's claims alone;
	// the store checks them against the token's grant and gives them the
	// grant's context (reason, requester, the actor's team and role) in the
	// one step that redeems it.
	ev.TokenID = c.ID
	ev.Actor = audit.Actor{ID: c.Act.Sub, Email: c.Act.Email}
	ev.Subject = audit.Subject{Collection: c.Collection, ID: c.Subject}
	ev.Scope = scopeOf(c.Scope)
	sid := token.NewJTI()
	sc := token.Claims{Act: token.Actor{Sub: c.Act.Sub, Email: c.Act.Email}, Collection: c.Collection, SID: sid, Scope: ev.Scope}
	sc.Subject = c.Subject
	cookieJWT, issued, err := h.o.Issuer.Issue(token.Session, sc, h.o.SessionTTL)
	if err != nil {
		return err
	}
	sess := store.Session{ID: sid, Actor: ev.Actor, Subject: ev.Subject, Scope: ev.Scope,
		TokenID: c.ID, StartedAt: issued.IssuedAt.Time, ExpiresAt: issued.ExpiresAt.Time, IP: ev.IP}
	red := store.Redemption{JTI: c.ID, Session: sess, Idle: h.o.SessionIdle, Unused: h.o.Unused, Details: details, DeferReplay: true}
	if h.o.Sessions != nil {
		// Auto delivery: a redirect credential presented with its grant's
		// live session is not needed. The cookie's claims are verified
		// here; whether it is the grant's session, and live, the store
		// says.
		if cc, ok := h.o.Sessions.Claims(r); ok && cc.SID != "" {
			red.Cookie = cc.SID
		}
	}
	events := []struct {
		dst *audit.Encoded
		ev  audit.Event
	}{
		{&red.Redeemed, eventOf(ev, audit.Redeemed, sid)},
		{&red.Unknown, eventOf(ev, audit.Rejected, "")},
		{&red.Superseded, eventOf(ev, audit.Ended, "")},
		{&red.Discarded, eventOf(ev, audit.Rejected, red.Cookie)},
	}
	events[2].ev.TokenID = "" // the script names the superseded session's token and session
	if red.Cookie == "" {
		events = events[:3]
	}
	for _, x := range events {
		if *x.dst, err = h.o.Events.Encode(x.ev); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	ok, _, err := h.o.Store.Redeem(wctx, red)
	var replayed *store.Replayed
	switch {
	case errors.As(err, &replayed):
		return h.replay(wctx, ev, replayed)
	case errors.Is(err, store.ErrFirstParty):
		return errInvalid(err)
	case errors.Is(err, store.ErrNotReplicated):
		return httpx.Unavailable(err)
	case errors.Is(err, store.ErrDisagree):
		return errInvalid(err)
	case errors.Is(err, store.ErrDiscarded):
		h.o.Log.InfoContext(ctx, "impersonation redirect credential discarded: the browser holds its grant's session",
			"request_id", ev.RequestID, "jti", c.ID, "sid", red.Cookie)
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, h.o.AppURL, http.StatusSeeOther)
		return nil
	case err != nil:
		return httpx.Unavailable(err)
	case !ok:
		return errInvalid(errors.New("token id unknown or already redeemed"))
	}
	h.o.Log.InfoContext(ctx, "impersonation redeemed", "request_id", ev.RequestID, "jti", c.ID, "sid", sid,
		"actor", ev.Actor.ID, "subject", ev.Subject.ID)
	cookie := h.o.Cookie
	if form {
		// The start page's own form (same origin, checked above): a
		// first-party session, SameSite=Lax whatever the delivery.
		cookie = cookie.FirstParty()
	}
	http.SetCookie(w, cookie.Set(cookieJWT, sess.ExpiresAt))
	if form {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, h.o.AppURL, http.StatusSeeOther)
		return nil
	}
	httpx.WriteJSON(w, http.StatusOK, loginAnswer{
		Subject:    sess.Subject.ID,
		Actor:      actorJSON{ID: sess.Actor.ID, Email: sess.Actor.Email},
		ExpiresAt:  sess.ExpiresAt,
		RedirectTo: h.o.AppURL,
	})
	return nil
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

// sameOrigin reports whether a form login comes from this service's own
// start page: its Origin is the public URL's, or the browser says
// Sec-Fetch-Site: same-origin.
func (h *Handler) sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		return session.SameOrigin(o, h.o.PublicURL)
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
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
			if e := httpx.BodyError(r, err); e != nil {
				return "", true, e
			}
			return "", true, httpx.Errorf(http.StatusBadRequest, "unreadable form", err)
		}
		raw, form = r.PostForm.Get("token"), true
	default:
		return "", false, httpx.Errorf(http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q is neither JSON nor a form", mt), nil)
	}
	if raw == "" {
		return "", form, httpx.Errorf(http.StatusBadRequest, "no token", nil)
	}
	return raw, form, nil
}

// reject audits a failed redemption of a token that does not verify, with
// its precise cause, counts it against the client's failure limit in the
// same step, and answers the one generic 401 (429 past the limit: then the
// failure is logged, not audited, so a flood cannot flood the audit log).
// If the refusal cannot be audited, 503.
func (h *Handler) reject(r *http.Request, ev audit.Event, detail string) error {
	ev.Type, ev.Detail = audit.Rejected, detail
	enc, err := h.o.Events.Encode(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	l := store.Limit{N: h.o.LoginRate.N, Window: h.o.LoginRate.Per, Who: []string{"login", Bucket(ev.IP)}}
	err = h.o.Store.AppendCounted(ctx, enc, l)
	var rate *store.RateError
	if errors.As(err, &rate) {
		return tooMany(rate, fmt.Errorf("login failure limit %s reached for %s: %s", h.o.LoginRate, Bucket(ev.IP), detail))
	}
	if err != nil {
		return httpx.Unavailable(err)
	}
	return errInvalid(errors.New(detail))
}

// Replays of spent tokens fold like the action's denials: at most
// replayFold events a replayWindow for one admin, the rest counted in one
// summary event.
const (
	replayFold   = 10
	replayWindow = time.Minute
)

// replay appends the event of a validly signed token presented again after
// its redemption. The first replay of a token is recorded (folded with the
// admin's other replays); every further one also counts as a failed login
// against the client's limit, since only a holder of a spent token sends
// it again and again: past the limit it is 429, not audited, like any other
// failure. The events fold per admin, so no flood floods the log or the
// notifications that follow it.
func (h *Handler) replay(ctx context.Context, ev audit.Event, rep *store.Replayed) error {
	summary := ev
	summary.Type, summary.TokenID = audit.Rejected, "" // it counts replays of any of the admin's tokens
	summary.Detail = "folded: " + store.FoldedMarker + " more replays of this admin's redeemed tokens in the last minute were counted, not recorded one by one"
	sum, err := h.o.Events.Encode(summary)
	if err != nil {
		return err
	}
	f := store.Fold{N: replayFold, Window: replayWindow, Who: []string{"replay", ev.Actor.ID}, Summary: sum}
	if rep.N > 1 {
		f.Limit = &store.Limit{N: h.o.LoginRate.N, Window: h.o.LoginRate.Per, Who: []string{"login", Bucket(ev.IP)}}
	}
	_, err = h.o.Store.AppendFolded(ctx, rep.Event, f)
	var rate *store.RateError
	switch {
	case errors.As(err, &rate):
		return tooMany(rate, fmt.Errorf("login failure limit %s reached for %s: replay %d of token %s", h.o.LoginRate, Bucket(ev.IP), rep.N, ev.TokenID))
	case err != nil:
		return httpx.Unavailable(err)
	}
	return errInvalid(fmt.Errorf("token %s replayed (%d times)", ev.TokenID, rep.N))
}

// tooMany is the limiter's 429, with the seconds left in its window.
func tooMany(rate *store.RateError, cause error) *httpx.Error {
	secs := max(int((rate.RetryAfter+time.Second-1)/time.Second), 1)
	return &httpx.Error{Status: http.StatusTooManyRequests, Message: "too_many_requests", Cause: cause,
		Header: http.Header{"Retry-After": []string{strconv.Itoa(secs)}}}
}

// Bucket is the failure limiter's bucket of a client address: the address
// itself for IPv4, its /64 for IPv6 (one client holds a whole /64).
func Bucket(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() || a.Is4In6() {
		return ip
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// details are the redemption events' details, by outcome: the store
// gives each event the one of its outcome.
var details = &store.Details{
	Unknown:     "unknown token id: never minted here, or expired in the store",
	Disagree:    "token and its server-side grant disagree",
	Replay:      "replayed: token already redeemed",
	ReplayW:     "replayed: token already redeemed (webhook credential)",
	ReplayR:     "replayed: token already redeemed (redirect credential)",
	RedeemedW:   "webhook credential",
	RedeemedR:   "redirect credential",
	Superseding: "redirect credential: the browser did not keep the webhook's cookie; its session was superseded",
	Superseded:  "superseded: the browser did not keep the webhook's cookie",
	FirstParty:  "webhook credential refused: the grant's session was opened first-party (redirect credential) already",
	Discarded:   "redirect credential not needed: the webhook's cookie was kept",
}

// withDetail is ev as an event of typ for session sid, without a detail:
// the store gives it the detail of the redemption's outcome.
func eventOf(ev audit.Event, typ audit.Type, sid string) audit.Event {
	ev.Type, ev.SessionID = typ, sid
	return ev
}

// scopeOf is a token's scope: full when it names none (issued before
// scopes).
func scopeOf(s string) string {
	if s == "" {
		return token.ScopeFull
	}
	return s
}
