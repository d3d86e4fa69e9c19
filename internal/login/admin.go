package login

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/store"
)

// sessionJSON is a session as the admin API lists it.
type sessionJSON struct {
	ID        string        `json:"id"`
	Actor     audit.Actor   `json:"actor"`
	Requester *audit.Actor  `json:"requester,omitempty"`
	Subject   audit.Subject `json:"subject"`
	Reason    string        `json:"reason"`
	StartedAt time.Time     `json:"started_at"`
	ExpiresAt time.Time     `json:"expires_at"`
	IP        string        `json:"ip,omitempty"`
}

func toJSON(s store.Session) sessionJSON {
	return sessionJSON{ID: s.ID, Actor: s.Actor, Requester: s.Requester, Subject: s.Subject, Reason: s.Reason,
		StartedAt: s.StartedAt, ExpiresAt: s.ExpiresAt, IP: s.IP}
}

// ListSessions answers GET /v1/sessions[?actor=<admin id>]: the live
// sessions, soonest end first.
func (h *Handlers) ListSessions(w http.ResponseWriter, r *http.Request) {
	list, err := h.o.Store.Sessions(r.Context(), r.URL.Query().Get("actor"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]sessionJSON, 0, len(list))
	for _, s := range list {
		out = append(out, toJSON(s))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"sessions": out})
}

// RevokeSession answers DELETE /v1/sessions/{id}: 204, or 404 when there
// is no such live session.
func (h *Handlers) RevokeSession(by func(*http.Request) string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := Revoke(r.Context(), h.o.Store, chi.URLParam(r, "id"), func(s store.Session) audit.Event {
			return sessionEvent(r, audit.Revoked, s, "revoked by "+by(r))
		})
		switch {
		case errors.Is(err, store.ErrNoSession):
			httpx.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "no such session"})
		case err != nil:
			h.fail(w, r, err)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}
}

// RevokeSessions answers DELETE /v1/sessions?actor=<admin id>: revokes every
// session of one admin and answers {"revoked": n}.
func (h *Handlers) RevokeSessions(by func(*http.Request) string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		actor := r.URL.Query().Get("actor")
		if actor == "" {
			httpx.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "actor (an admin id) is required: DELETE /v1/sessions?actor=<id>"})
			return
		}
		n, err := RevokeAll(r.Context(), h.o.Store, actor, func(s store.Session) audit.Event {
			return sessionEvent(r, audit.Revoked, s, "revoked with every session of admin "+actor+" by "+by(r))
		})
		if err != nil {
			h.fail(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]int{"revoked": n})
	}
}

// SessionEnder is the part of the store that revocation needs.
type SessionEnder interface {
	Sessions(ctx context.Context, adminID string) ([]store.Session, error)
	GetSession(ctx context.Context, sid string) (store.Session, error)
	EndSession(ctx context.Context, sess store.Session, ev audit.Event) error
}

// RevokeAll revokes every live session of admin adminID, appending the
// event ev(session) for each, and returns how many it revoked. Sessions
// that end meanwhile are skipped.
func RevokeAll(ctx context.Context, st SessionEnder, adminID string, ev func(store.Session) audit.Event) (int, error) {
	list, err := st.Sessions(ctx, adminID)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range list {
		err := st.EndSession(ctx, s, ev(s))
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

// Revoke revokes the session sid, appending ev(session).
func Revoke(ctx context.Context, st SessionEnder, sid string, ev func(store.Session) audit.Event) error {
	sess, err := st.GetSession(ctx, sid)
	if err != nil {
		return err
	}
	return st.EndSession(ctx, sess, ev(sess))
}
