package action

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// Store is what the action needs of Redis: the atomic
// rate-reserve-and-audit step, and a plain audit append for refusals.
type Store interface {
	ReserveLimited(ctx context.Context, jti string, g store.Grant, ttl time.Duration, ev audit.Event, l *store.Limit) (string, error)
	Append(ctx context.Context, ev audit.Event) (string, error)
}

// Issuer signs impersonation tokens.
type Issuer interface {
	Issue(k token.Kind, c token.Claims, ttl time.Duration) (string, *token.Claims, error)
}

// Options configure the action handler.
type Options struct {
	Log       *slog.Logger
	Auth      *Authenticator
	EnvSecret string // FOREST_ENV_SECRET; empty disables approval requests
	Policy    *Policy
	Store     Store
	Issuer    Issuer
	TokenTTL  time.Duration
	Delivery  config.Delivery
	PublicURL string
	AppURL    string
	Now       func() time.Time
}

// maxReason bounds the reason kept in tokens' grants and audit events.
const maxReason = 1000

// Handler returns the action handler: POST on the legacy path, or on the
// new agents' path whose {collection} must match the body's.
func Handler(o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := o.serve(w, r); err != nil {
			o.fail(w, r, err)
		}
	})
}

// Errors the handler maps to answers.
type (
	unauthorized struct{ cause error }
	forbidden    struct{ rule, detail string }
	unavailable  struct{ cause error }
)

func (e *unauthorized) Error() string { return "unauthorized: " + e.cause.Error() }
func (e *forbidden) Error() string    { return "forbidden by rule " + e.rule + ": " + e.detail }
func (e *unavailable) Error() string  { return "unavailable: " + e.cause.Error() }
func (e *unauthorized) Unwrap() error { return e.cause }
func (e *unavailable) Unwrap() error  { return e.cause }

func (o *Options) serve(w http.ResponseWriter, r *http.Request) error {
	admin, err := o.Auth.Authenticate(r)
	if errors.Is(err, errNotConfigured) {
		return &unavailable{cause: err}
	}
	if err != nil {
		return &unauthorized{cause: err}
	}
	ev := audit.Event{
		Actor:     audit.Actor{ID: admin.ID, Email: admin.Email, Team: admin.Team, Role: admin.Role},
		IP:        httpx.ClientIP(r.Context()),
		UserAgent: r.UserAgent(),
		RequestID: httpx.RequestID(r.Context()),
	}
	t, err := o.target(r)
	ev.Subject = audit.Subject{Collection: t.Collection, ID: t.ID}
	ev.Reason = t.Reason
	if t.RequesterID != "" {
		ev.Requester = &audit.Actor{ID: t.RequesterID}
	}
	if err == nil {
		err = o.authorize(admin, t)
	}
	if err != nil {
		if werr := o.deny(r.Context(), ev, err); werr != nil {
			return werr
		}
		return err
	}

	claims := token.Claims{Act: token.Actor{Sub: admin.ID, Email: admin.Email}, Collection: t.Collection}
	claims.Subject = t.ID
	raw, issued, err := o.Issuer.Issue(token.Impersonation, claims, o.TokenTTL)
	if err != nil {
		return err // a signing failure: 500, nothing stored, nothing handed out
	}
	ev.Type, ev.TokenID = audit.Minted, issued.ID
	ev.Detail = "delivery " + string(o.Delivery)
	grant := store.Grant{Actor: ev.Actor, Requester: ev.Requester, Subject: ev.Subject, Reason: t.Reason, ExpiresAt: issued.ExpiresAt.Time}
	// One round trip: the per-admin rate (counted in Redis, shared by every
	// instance), the reservation and its audit event.
	var limit *store.Limit
	if rate := o.Policy.Rate; rate.N > 0 {
		denied := ev
		denied.Type, denied.TokenID = audit.Denied, ""
		denied.Detail = "rule " + ruleRate + ": over " + rate.String() + " for this admin"
		limit = &store.Limit{N: rate.N, Window: rate.Per, Key: []string{"rate", "mint", admin.ID}, Denied: denied}
	}
	_, err = o.Store.ReserveLimited(r.Context(), issued.ID, grant, o.TokenTTL, ev, limit)
	var rateErr *store.RateError
	if errors.As(err, &rateErr) {
		return &forbidden{rule: ruleRate, detail: fmt.Sprintf("over %s; next allowed in %s", o.Policy.Rate, rateErr.RetryAfter.Round(time.Second))}
	}
	if err != nil {
		return &unavailable{cause: err} // the token is dropped: never stored, never audited, never sent
	}
	o.Log.InfoContext(r.Context(), "impersonation minted",
		"request_id", ev.RequestID, "jti", issued.ID, "actor", admin.ID, "collection", t.Collection, "subject", t.ID)
	httpx.WriteJSON(w, http.StatusOK, o.answer(raw, t))
	return nil
}

// target reads the body, swaps in a verified approval request's payload and
// validates it. The target is filled as far as it could be read, for the
// refusal's audit event.
func (o *Options) target(r *http.Request) (target, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return target{}, refuse("request body larger than %d bytes", maxBody)
	}
	req, err := decodeRequest(body)
	if err != nil {
		return target{}, err
	}
	attrs := &req.Data.Attributes
	if len(attrs.RequesterID) > 0 && string(attrs.RequesterID) != "null" {
		return target{Collection: attrs.CollectionName}, errRequesterID
	}
	approved := false
	if attrs.SignedApprovalRequest != nil && *attrs.SignedApprovalRequest != "" {
		signed, err := approval(*attrs.SignedApprovalRequest, []byte(o.EnvSecret), o.Now)
		if err != nil {
			return target{Collection: attrs.CollectionName}, &forbidden{rule: "approval", detail: err.Error()}
		}
		attrs, approved = signed, true
	}
	t, err := attrs.validate(approved)
	if err != nil {
		return t, err
	}
	if c := chi.URLParam(r, "collection"); c != "" && c != t.Collection {
		return t, refuse("collection_name %q does not match the action path's collection %q", t.Collection, c)
	}
	if n := utf8.RuneCountInString(t.Reason); n < o.Policy.MinReason {
		return t, refuse("the reason must be at least %d characters", o.Policy.MinReason)
	} else if n > maxReason {
		return t, refuse("the reason must be at most %d characters", maxReason)
	}
	return t, nil
}

// authorize applies the policy's rules; the rate is counted with the
// reservation itself.
func (o *Options) authorize(a Admin, t target) error {
	if rule, detail := o.Policy.check(a, t); rule != "" {
		return &forbidden{rule: rule, detail: detail}
	}
	return nil
}

// deny appends the impersonation.denied event of a refusal. A refusal that
// cannot be audited becomes a 503.
func (o *Options) deny(ctx context.Context, ev audit.Event, cause error) error {
	var u *unavailable
	if errors.As(cause, &u) {
		return cause
	}
	ev.Type = audit.Denied
	var f *forbidden
	switch {
	case errors.As(cause, &f):
		ev.Detail = "rule " + f.rule + ": " + f.detail
	default:
		ev.Detail = "refused: " + cause.Error()
	}
	if _, err := o.Store.Append(ctx, ev); err != nil {
		return &unavailable{cause: err}
	}
	return nil
}

// webhookAnswer is Forest's webhook result; field order is the wire order.
type webhookAnswer struct {
	Webhook struct {
		URL     string            `json:"url"`
		Method  string            `json:"method"`
		Headers map[string]string `json:"headers"`
		Body    struct {
			Token string `json:"token"`
		} `json:"body"`
	} `json:"webhook"`
	Success    string `json:"success"`
	RedirectTo string `json:"redirectTo"`
}

type redirectAnswer struct {
	Success    string `json:"success"`
	RedirectTo string `json:"redirectTo"`
}

func (o *Options) answer(raw string, t target) any {
	success := "Impersonating " + t.Collection + " " + t.ID
	if o.Delivery == config.Redirect {
		return redirectAnswer{Success: success, RedirectTo: o.PublicURL + "/impersonation/start#token=" + raw}
	}
	var a webhookAnswer
	a.Webhook.URL = o.PublicURL + "/impersonation/login"
	a.Webhook.Method = http.MethodPost
	a.Webhook.Headers = map[string]string{"Content-Type": "application/json"}
	a.Webhook.Body.Token = raw
	a.Success, a.RedirectTo = success, o.AppURL
	return a
}

// forestError is the JSON:API error shape Forest's UI shows.
type forestError struct {
	Errors []forestErrorItem `json:"errors"`
}

type forestErrorItem struct {
	Status int    `json:"status"`
	Name   string `json:"name"`
	Detail string `json:"detail"`
}

func writeForestError(w http.ResponseWriter, status int, name, detail string) {
	httpx.WriteJSON(w, status, forestError{Errors: []forestErrorItem{{Status: status, Name: name, Detail: detail}}})
}

// fail answers err in the contract's shape and logs it once. 401 and 403
// details never say which check failed.
func (o *Options) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		ref *refusal
		una *unauthorized
		frb *forbidden
		unv *unavailable
	)
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &una):
		status = http.StatusUnauthorized
		writeForestError(w, status, "Unauthorized", "Your Forest session is missing, invalid or expired. Log in again.")
	case errors.As(err, &frb):
		status = http.StatusForbidden
		writeForestError(w, status, "CustomActionTriggerForbiddenError", "You are not allowed to impersonate this record.")
	case errors.Is(err, errRequesterID):
		status = http.StatusUnprocessableEntity
		writeForestError(w, status, "UnprocessableError", "'requester_id' must not be present.")
	case errors.As(err, &ref):
		status = http.StatusBadRequest
		httpx.WriteJSON(w, status, map[string]string{"error": ref.msg})
	case errors.As(err, &unv):
		status = http.StatusServiceUnavailable
		detail := "Impersonation is unavailable right now; nothing was issued. Try again shortly."
		if errors.Is(err, errNotConfigured) {
			detail = "Impersonation is not configured on this service (FOREST_AUTH_SECRET)."
		}
		writeForestError(w, status, "ServiceUnavailableError", detail)
	default:
		writeForestError(w, status, "InternalServerError", "Internal error; nothing was issued.")
	}
	httpx.LogError(o.Log, r, httpx.Errorf(status, "forest action refused", err))
}
