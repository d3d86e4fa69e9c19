package session

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/ident"
	"github.com/impersonator/impersonator/internal/safetext"
	"github.com/impersonator/impersonator/internal/store"
)

// Customer consent (/v1/consents/{collection}/{id}): the customer's
// permission to be impersonated until a time, required by the policy's
// require_consent collections.

// Consent limits.
const (
	MaxConsentAhead  = 30 * 24 * time.Hour // until is at most this far ahead
	MaxConsentNote   = 500                 // bytes
	maxConsentBody   = 4 << 10
	maxCollectionLen = 128
	// ConsentWithdrawn is the detail of the sessions revoked by a
	// withdrawal.
	ConsentWithdrawn = "consent withdrawn"
)

// ConsentStore is what the consent API needs of Redis.
type ConsentStore interface {
	GrantConsent(ctx context.Context, c store.Consent, ev audit.Encoded) error
	ConsentOf(ctx context.Context, subj audit.Subject) (store.Consent, error)
	WithdrawConsent(ctx context.Context, subj audit.Subject, ev audit.Encoded) (int, error)
	SubjectSessions(ctx context.Context, subj audit.Subject) ([]store.Session, error)
}

// Consents serves the consent API.
type Consents struct {
	Store   ConsentStore
	Revoker Revoker
	Events  audit.Encoder
	Now     func() time.Time
	// Subject, when set, reads the path's subject in place of PathSubject
	// (serve's puts the id in its collection's declared id kind).
	Subject func(*http.Request) (audit.Subject, error)
}

// subject reads the path's subject.
func (cs Consents) subject(r *http.Request) (audit.Subject, error) {
	if cs.Subject != nil {
		return cs.Subject(r)
	}
	return PathSubject(r)
}

// consentJSON is a consent as the API shows it.
type consentJSON struct {
	Subject   audit.Subject `json:"subject"`
	Until     time.Time     `json:"until"`
	Note      string        `json:"note"`
	GrantedAt time.Time     `json:"granted_at"`
	GrantedBy string        `json:"granted_by"`
}

func consentOut(c store.Consent) consentJSON {
	return consentJSON{Subject: c.Subject, Until: c.Until.UTC(), Note: c.Note, GrantedAt: c.GrantedAt.UTC(), GrantedBy: c.GrantedBy}
}

// PathSubject reads {collection} and {id} of a /v1 path: a collection of
// 1-128 characters from [A-Za-z0-9_.-], and a canonical record id
// (internal/ident, the action's rule). Errors are 400s naming the problem.
func PathSubject(r *http.Request) (audit.Subject, error) {
	c := chi.URLParam(r, "collection")
	if c == "" || len(c) > maxCollectionLen {
		return audit.Subject{}, httpx.Errorf(http.StatusBadRequest, fmt.Sprintf("collection must be 1 to %d characters", maxCollectionLen), nil)
	}
	for i := 0; i < len(c); i++ {
		switch b := c[i]; {
		case b == '_' || b == '.' || b == '-', '0' <= b && b <= '9', 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z':
		default:
			return audit.Subject{}, httpx.Errorf(http.StatusBadRequest, "collection may hold only A-Z a-z 0-9 _ . -", nil)
		}
	}
	id, err := ident.Parse(chi.URLParam(r, "id"))
	if err != nil {
		return audit.Subject{}, httpx.Errorf(http.StatusBadRequest, "id: "+err.Error(), err)
	}
	return audit.Subject{Collection: c, ID: id}, nil
}

// Put answers PUT /v1/consents/{collection}/{id} with {"until": RFC 3339,
// "note": …}: the customer consents until then (in the future, at most 30
// days ahead). It replaces any consent of the subject, appends
// consent.granted in the same step and answers 200 with the consent.
func (cs Consents) Put(by func(*http.Request) string) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		subj, err := cs.subject(r)
		if err != nil {
			return err
		}
		var body struct {
			Until *string `json:"until"`
			Note  string  `json:"note"`
		}
		if err := httpx.Decode(w, r, &body, httpx.DecodeOptions{MaxBytes: maxConsentBody}); err != nil {
			return err
		}
		if body.Until == nil {
			return httpx.Errorf(http.StatusBadRequest, "until is required: an RFC 3339 time such as 2026-12-01T00:00:00Z", nil)
		}
		until, err := time.Parse(time.RFC3339, *body.Until)
		if err != nil {
			return httpx.Errorf(http.StatusBadRequest, fmt.Sprintf("until %q is not an RFC 3339 time such as 2026-12-01T00:00:00Z", *body.Until), err)
		}
		now := cs.Now()
		switch {
		case !until.After(now):
			return httpx.Errorf(http.StatusBadRequest, "until must be in the future", nil)
		case until.Sub(now) > MaxConsentAhead:
			return httpx.Errorf(http.StatusBadRequest, "until must be at most 30 days ahead", nil)
		case len(body.Note) > MaxConsentNote:
			return httpx.Errorf(http.StatusBadRequest, fmt.Sprintf("note must be at most %d bytes", MaxConsentNote), nil)
		}
		if err := safetext.CheckReason(body.Note, 0); err != nil {
			return httpx.Errorf(http.StatusBadRequest, "note: "+err.Error(), err)
		}
		c := store.Consent{Subject: subj, Until: until.UTC(), Note: body.Note, GrantedAt: now.UTC(), GrantedBy: by(r)}
		ev, err := cs.Events.Encode(audit.Event{Type: audit.ConsentGranted, Subject: subj, Reason: body.Note,
			Detail: "by " + by(r) + ", until " + c.Until.Format(time.RFC3339), IP: httpx.ClientIP(r.Context()),
			UserAgent: r.UserAgent(), RequestID: httpx.RequestID(r.Context())})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
		defer cancel()
		if err := cs.Store.GrantConsent(ctx, c, ev); err != nil {
			return httpx.Unavailable(err)
		}
		httpx.WriteJSON(w, http.StatusOK, consentOut(c))
		return nil
	}
}

// Get answers GET /v1/consents/{collection}/{id}: the active consent, or
// 404 when there is none (never given, withdrawn or expired).
func (cs Consents) Get() httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		subj, err := cs.subject(r)
		if err != nil {
			return err
		}
		c, err := cs.Store.ConsentOf(r.Context(), subj)
		if errors.Is(err, store.ErrNoConsentRecord) || err == nil && !c.Until.After(cs.Now()) {
			return httpx.Errorf(http.StatusNotFound, "no active consent", err)
		}
		if err != nil {
			return httpx.Unavailable(err)
		}
		httpx.WriteJSON(w, http.StatusOK, consentOut(c))
		return nil
	}
}

// Delete answers DELETE /v1/consents/{collection}/{id}: withdraws the
// consent (consent.granted's counterpart, consent.withdrawn, in the same
// step, which also voids the subject's tokens not redeemed yet), then
// revokes every live session of the subject (session.revoked, "consent
// withdrawn"). 200 {"withdrawn":…,"revoked":n}; 404 when there was neither
// a consent nor a live session.
func (cs Consents) Delete(by func(*http.Request) string) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		subj, err := cs.subject(r)
		if err != nil {
			return err
		}
		ev, err := cs.Events.Encode(audit.Event{Type: audit.ConsentWithdrawn, Subject: subj, Detail: "by " + by(r),
			IP: httpx.ClientIP(r.Context()), UserAgent: r.UserAgent(), RequestID: httpx.RequestID(r.Context())})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
		defer cancel()
		_, err = cs.Store.WithdrawConsent(ctx, subj, ev)
		withdrawn := err == nil
		if err != nil && !errors.Is(err, store.ErrNoConsentRecord) {
			return httpx.Unavailable(err)
		}
		n, err := cs.RevokeSubject(ctx, subj, Request(r), ConsentWithdrawn)
		if err != nil {
			return httpx.Unavailable(err)
		}
		if !withdrawn && n == 0 {
			return httpx.Errorf(http.StatusNotFound, "no active consent", nil)
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"withdrawn": withdrawn, "revoked": n})
		return nil
	}
}

// RevokeSubject revokes every live session impersonating subj and returns
// how many it revoked. Sessions that end meanwhile are skipped.
func (cs Consents) RevokeSubject(ctx context.Context, subj audit.Subject, ri RequestInfo, detail string) (int, error) {
	list, err := cs.Store.SubjectSessions(ctx, subj)
	if err != nil {
		return 0, err
	}
	return cs.Revoker.endAll(ctx, list, ri, detail)
}
