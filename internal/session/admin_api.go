package session

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/safetext"
	"github.com/impersonator/impersonator/internal/store"
)

// The admin API over sessions (/v1/sessions) and the revocations the CLI
// shares with it.

// sessionJSON is a session as the admin API lists it.
type sessionJSON struct {
	ID        string        `json:"id"`
	Actor     audit.Actor   `json:"actor"`
	Requester *audit.Actor  `json:"requester,omitempty"`
	Subject   audit.Subject `json:"subject"`
	Reason    string        `json:"reason"`
	Scope     string        `json:"scope"`
	StartedAt time.Time     `json:"started_at"`
	ExpiresAt time.Time     `json:"expires_at"`
	IP        string        `json:"ip,omitempty"`
}

func toJSON(s store.Session) sessionJSON {
	return sessionJSON{ID: s.ID, Actor: s.Actor, Requester: s.Requester, Subject: s.Subject, Reason: s.Reason, Scope: Scope(s),
		StartedAt: s.StartedAt, ExpiresAt: s.ExpiresAt, IP: s.IP}
}

// Lister lists live sessions.
type Lister interface {
	Sessions(ctx context.Context, adminID string) ([]store.Session, error)
}

// Ender is the part of the store that revocation needs.
type Ender interface {
	Lister
	sessionEnder
	GetSession(ctx context.Context, sid string) (store.Session, error)
}

// ListHandler answers GET /v1/sessions[?actor=<admin id>]: the live
// sessions, soonest end first.
func ListHandler(st Lister) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		list, err := st.Sessions(r.Context(), r.URL.Query().Get("actor"))
		if err != nil {
			return httpx.Unavailable(err)
		}
		out := make([]sessionJSON, 0, len(list))
		for _, s := range list {
			out = append(out, toJSON(s))
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"sessions": out})
		return nil
	}
}

// Revoker revokes sessions with their session.revoked events.
type Revoker struct {
	Store  Ender
	Events audit.Encoder
	// Cache, when set, is this instance's session cache: a revocation
	// drops the session there at once (other instances drop it on the
	// published end).
	Cache *Cache
	// Activity, when set, gives each revocation event its session's
	// request count.
	Activity *Recorder
}

// RevokeHandler answers DELETE /v1/sessions/{id}: 204, or 404 when there is
// no such live session. by names the caller in the event's detail.
func (rv Revoker) RevokeHandler(by func(*http.Request) string) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
		defer cancel()
		err := rv.Revoke(ctx, chi.URLParam(r, "id"), Request(r), "revoked by "+by(r))
		switch {
		case errors.Is(err, store.ErrNoSession):
			return httpx.Errorf(http.StatusNotFound, "no such session", err)
		case err != nil:
			return httpx.Unavailable(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// RevokeAllHandler answers DELETE /v1/sessions?actor=<admin id>: revokes
// every session of one admin and answers {"revoked": n}.
func (rv Revoker) RevokeAllHandler(by func(*http.Request) string) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		actor := r.URL.Query().Get("actor")
		if actor == "" {
			return httpx.Errorf(http.StatusBadRequest, "actor (an admin id) is required: DELETE /v1/sessions?actor=<id>", nil)
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
		defer cancel()
		n, err := rv.RevokeAll(ctx, actor, Request(r), "revoked with every session of admin "+actor+" by "+by(r))
		if err != nil {
			return httpx.Unavailable(err)
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]int{"revoked": n})
		return nil
	}
}

// RevokeAll revokes every live session of admin adminID and returns how
// many it revoked. Sessions that end meanwhile are skipped.
func (rv Revoker) RevokeAll(ctx context.Context, adminID string, ri RequestInfo, detail string) (int, error) {
	list, err := rv.Store.Sessions(ctx, adminID)
	if err != nil {
		return 0, err
	}
	return rv.endAll(ctx, list, ri, detail)
}

// endAll ends the sessions of list and returns how many it ended; those
// that ended meanwhile are skipped.
func (rv Revoker) endAll(ctx context.Context, list []store.Session, ri RequestInfo, detail string) (int, error) {
	n := 0
	for _, s := range list {
		err := rv.end(ctx, s, ri, detail)
		if errors.Is(err, store.ErrNoSession) {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Revoke revokes the session sid.
func (rv Revoker) Revoke(ctx context.Context, sid string, ri RequestInfo, detail string) error {
	sess, err := rv.Store.GetSession(ctx, sid)
	if err != nil {
		return err
	}
	return rv.end(ctx, sess, ri, detail)
}

// RevokeSession revokes sess, as a listing returned it, with detail; a
// session that ended meanwhile is store.ErrNoSession.
func (rv Revoker) RevokeSession(ctx context.Context, sess store.Session, ri RequestInfo, detail string) error {
	return rv.end(ctx, sess, ri, detail)
}

func (rv Revoker) end(ctx context.Context, sess store.Session, ri RequestInfo, detail string) error {
	ri.Requests = rv.Activity.requestsOf(ctx, sess.ID)
	return endSession(ctx, rv.Store, rv.Events, rv.Cache, audit.Revoked, sess, ri, safetext.Truncate(detail, 500))
}
