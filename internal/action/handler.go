package action

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/safetext"
	"github.com/impersonator/impersonator/internal/store"
	"github.com/impersonator/impersonator/internal/token"
)

// Store is what the action needs of Redis: the atomic
// rate-reserve-and-audit step, and a folded audit append for refusals.
type Store interface {
	Reserve(ctx context.Context, r store.Reservation) (string, error)
	AppendFolded(ctx context.Context, ev audit.Encoded, f store.Fold) (folded bool, err error)
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
	// Policies, when set, holds the current policy (it reloads) and
	// replaces Policy: each request reads it once.
	Policies  *PolicyHolder
	Store     Store
	Issuer    Issuer
	Events    audit.Encoder
	TokenTTL  time.Duration
	Delivery  config.Delivery
	PublicURL string
	AppURL    string
	Now       func() time.Time
	// Folded counts denials folded into a summary (a metric).
	Folded func()
}

// Denials of one admin past denialFold a minute are folded: counted, and
// summed up in one event a minute, so a refused admin cannot flood the log.
const (
	denialFold   = 10
	denialWindow = time.Minute
	// auditTimeout bounds a refusal's audit write, which outlives a client
	// that hung up (context.WithoutCancel).
	auditTimeout = 3 * time.Second
)

// Handler returns the action handler: POST on the legacy path, or on the
// new agents' path whose {collection} must match the body's.
func Handler(o Options) httpx.HandlerFunc { return o.serve }

// Errors the handler maps to answers.
type (
	unauthorized struct{ cause error }
	forbidden    struct{ rule, detail string }
)

func (e *unauthorized) Error() string { return "unauthorized: " + e.cause.Error() }
func (e *forbidden) Error() string    { return "forbidden by rule " + e.rule + ": " + e.detail }
func (e *unauthorized) Unwrap() error { return e.cause }

// policy returns the policy in force now.
func (o *Options) policy() *Policy {
	if o.Policies != nil {
		return o.Policies.Load()
	}
	return o.Policy
}

func (o *Options) serve(w http.ResponseWriter, r *http.Request) error {
	policy := o.policy() // one policy for the whole request, however it reloads meanwhile
	admin, err := o.Auth.Authenticate(r)
	if errors.Is(err, errNotConfigured) {
		return public(&httpx.Error{Status: http.StatusServiceUnavailable, Cause: err})
	}
	if err != nil {
		return public(&unauthorized{cause: err})
	}
	ev := audit.Event{
		Actor: audit.Actor{ID: admin.ID, Email: admin.Email, Team: admin.Team, Role: admin.Role,
			Name: admin.Name(), PermissionLevel: admin.PermissionLevel},
		IP:        httpx.ClientIP(r.Context()),
		UserAgent: r.UserAgent(),
		RequestID: httpx.RequestID(r.Context()),
	}
	if err := admin.checkText(); err != nil {
		return public(o.deny(r, ev, err))
	}
	t, err := o.target(r, policy)
	ev.Subject = audit.Subject{Collection: t.Collection, ID: t.ID}
	ev.Reason = t.Reason
	if t.RequesterID != "" {
		ev.Requester = &audit.Actor{ID: t.RequesterID}
	}
	if err == nil {
		if t.Scope == "" {
			t.Scope = policy.defaultAccess()
		}
		err = authorize(policy, admin, t)
	}
	if err != nil {
		return public(o.deny(r, ev, err))
	}

	claims := token.Claims{Act: token.Actor{Sub: admin.ID, Email: admin.Email}, Collection: t.Collection, Scope: t.Scope}
	claims.Subject = t.ID
	raw, issued, err := o.Issuer.Issue(token.Impersonation, claims, o.TokenTTL)
	if err != nil {
		return public(err) // a signing failure: 500, nothing stored, nothing handed out
	}
	minted := ev
	minted.Type, minted.TokenID, minted.Scope = audit.Minted, issued.ID, t.Scope
	minted.Detail = "delivery " + string(o.Delivery)
	res := store.Reservation{
		JTI:   issued.ID,
		Grant: store.Grant{Actor: ev.Actor, Requester: ev.Requester, Subject: ev.Subject, Reason: t.Reason, Scope: t.Scope, ExpiresAt: issued.ExpiresAt.Time},
		TTL:   o.TokenTTL,
	}
	var second string // auto delivery: the redirect credential
	if o.Delivery == config.Auto {
		var issuedR *token.Claims
		if second, issuedR, err = o.Issuer.Issue(token.Impersonation, claims, o.TokenTTL); err != nil {
			return public(err)
		}
		grantID := token.NewJTI()
		rg := res.Grant
		res.Grant.GrantID, res.Grant.Credential, res.Grant.PairJTI = grantID, store.CredentialWebhook, issuedR.ID
		rg.GrantID, rg.Credential, rg.PairJTI = grantID, store.CredentialRedirect, issued.ID
		res.Pair = &store.Pair{JTI: issuedR.ID, Grant: rg}
		minted.Detail = "delivery auto: webhook credential " + issued.ID + ", redirect credential " + issuedR.ID
	}
	if res.Minted, err = o.Events.Encode(minted); err != nil {
		return public(err)
	}
	// One round trip: the per-admin rate (counted in Redis, shared by every
	// instance), the approval's single use, the reservation and its event.
	if policy.requiresConsent(t.Collection) {
		denied := ev
		denied.Type = audit.Denied
		denied.Detail = "rule " + ruleConsent + ": " + t.Collection + " " + t.ID + " has no active consent from the customer"
		res.Consent = &store.ConsentCheck{}
		if res.Consent.Denied, err = o.Events.Encode(denied); err != nil {
			return public(err)
		}
	}
	// The rate's and the approval's refusal events are written by deny
	// (folded per admin) when they happen, rather than encoded for every
	// mint in case they do.
	if rate := policy.Rate; rate.N > 0 {
		res.Rate = &store.Limit{N: rate.N, Window: rate.Per, Who: []string{"mint", admin.ID}}
	}
	if t.approval != nil {
		res.Approval = &store.ApprovalUse{ID: t.approval.id, Until: t.approval.ttl}
	}
	_, err = o.Store.Reserve(r.Context(), res)
	var rateErr *store.RateError
	switch {
	case errors.As(err, &rateErr):
		return public(o.deny(r, ev, &forbidden{rule: ruleRate,
			detail: fmt.Sprintf("over %s for this admin; next allowed in %s", policy.Rate, rateErr.RetryAfter.Round(time.Second))}))
	case errors.Is(err, store.ErrNoConsent):
		return public(&forbidden{rule: ruleConsent, detail: "no active consent"})
	case errors.Is(err, store.ErrApprovalUsed):
		return public(o.deny(r, ev, &forbidden{rule: ruleApproval, detail: "this approval request was already used"}))
	case err != nil:
		return public(httpx.Unavailable(err)) // the token is dropped: never delivered
	}
	o.Log.InfoContext(r.Context(), "impersonation minted",
		"request_id", ev.RequestID, "jti", issued.ID, "actor", admin.ID, "collection", t.Collection, "subject", t.ID, "scope", t.Scope)
	httpx.WriteJSON(w, http.StatusOK, o.answer(raw, second, t))
	return nil
}

// target reads the body, swaps in a verified approval request's payload and
// validates it. The target is filled as far as it could be read, for the
// refusal's audit event.
func (o *Options) target(r *http.Request, policy *Policy) (target, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		if e := httpx.BodyError(r, err); e != nil && e.Status != http.StatusRequestEntityTooLarge {
			return target{}, e
		}
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
	var appr *approvalRequest
	if attrs.SignedApprovalRequest != nil && *attrs.SignedApprovalRequest != "" {
		appr, err = approval(*attrs.SignedApprovalRequest, []byte(o.EnvSecret), o.Now, chi.URLParam(r, "collection"))
		if err != nil {
			return target{Collection: attrs.CollectionName}, &forbidden{rule: ruleApproval, detail: err.Error()}
		}
		attrs = appr.attrs
	}
	t, err := attrs.validate(appr != nil, policy.IDs)
	t.approval = appr
	if err != nil {
		return t, err
	}
	if c := chi.URLParam(r, "collection"); c != "" && c != t.Collection {
		return t, refuse("collection_name %q does not match the action path's collection %q", t.Collection, c)
	}
	if err := safetext.CheckReason(t.Reason, 0); err != nil {
		return t, refuse("%v", err)
	}
	if safetext.VisibleLen(t.Reason) < policy.MinReason {
		return t, refuse("the reason must be at least %d characters", policy.MinReason)
	}
	if len(t.Reason) > audit.MaxReasonBytes {
		return t, refuse("the reason must be at most %d bytes", audit.MaxReasonBytes)
	}
	return t, nil
}

// authorize applies the policy's rules; the rate is counted with the
// reservation itself.
func authorize(p *Policy, a Admin, t target) error {
	if rule, detail := p.check(a, t); rule != "" {
		return &forbidden{rule: rule, detail: detail}
	}
	return nil
}

// deny appends the impersonation.denied event of a refusal and returns the
// refusal. The write outlives a client that hung up, so every refusal is
// recorded; one that cannot be recorded becomes a 503.
func (o *Options) deny(r *http.Request, ev audit.Event, cause error) error {
	var he *httpx.Error
	if errors.As(cause, &he) {
		return cause // the client left or timed out: nothing was decided
	}
	ev.Type = audit.Denied
	var f *forbidden
	var ref *refusal
	switch {
	case errors.As(cause, &f):
		ev.Detail = "rule " + f.rule + ": " + f.detail
	case errors.As(cause, &ref) && ref.nonCanonical:
		ev.Detail = "refused: id is not canonical: " + ref.msg
	default:
		ev.Detail = "refused: " + cause.Error()
	}
	enc, err := o.Events.Encode(ev)
	if err != nil {
		return err
	}
	summary := ev
	summary.Detail = "folded: " + store.FoldedMarker + " more denials of this admin in the last minute were counted, not recorded one by one"
	sum, err := o.Events.Encode(summary)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	folded, err := o.Store.AppendFolded(ctx, enc, store.Fold{N: denialFold, Window: denialWindow, Who: []string{"deny", ev.Actor.ID}, Summary: sum})
	if err != nil {
		return httpx.Unavailable(err)
	}
	if folded && o.Folded != nil {
		o.Folded()
	}
	return cause
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

// answer is the action's 200: the webhook answer (webhook and auto
// delivery; auto's redirectTo opens the start page with the second
// credential) or the redirect answer.
func (o *Options) answer(raw, second string, t target) any {
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
	if second != "" {
		a.RedirectTo = o.PublicURL + "/impersonation/start#token=" + second
	}
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

// public maps the action's errors to the contract's answers (DESIGN.md
// 3.3). 401 and 403 details never say which check failed; the cause goes
// to the log only.
func public(err error) *httpx.Error {
	var (
		ref *refusal
		una *unauthorized
		frb *forbidden
		he  *httpx.Error
	)
	switch {
	case errors.As(err, &una):
		return &httpx.Error{Status: http.StatusUnauthorized, Code: "Unauthorized", Message: "Your Forest session is missing, invalid or expired. Log in again.", Cause: err}
	case errors.As(err, &frb):
		return &httpx.Error{Status: http.StatusForbidden, Code: "CustomActionTriggerForbiddenError", Message: "You are not allowed to impersonate this record.", Cause: err}
	case errors.Is(err, errRequesterID):
		return &httpx.Error{Status: http.StatusUnprocessableEntity, Code: "UnprocessableError", Message: "'requester_id' must not be present.", Cause: err}
	case errors.As(err, &ref):
		return &httpx.Error{Status: http.StatusBadRequest, Message: ref.msg, Cause: err}
	case errors.As(err, &he) && he.Status == http.StatusServiceUnavailable:
		detail := "Impersonation is unavailable right now; nothing was issued. Try again shortly."
		if errors.Is(err, errNotConfigured) {
			detail = "Impersonation is not configured on this service (FOREST_AUTH_SECRET)."
		}
		return &httpx.Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableError", Message: detail, Cause: err}
	case errors.As(err, &he):
		return he
	}
	return &httpx.Error{Status: http.StatusInternalServerError, Code: "InternalServerError", Message: "Internal error; nothing was issued.", Cause: err}
}

// ForestShape writes the action routes' errors: Forest's JSON:API errors
// for the errors Forest's UI shows as a toast (named ones), and the
// action-level {"error": …} for refusals of the request itself (400).
func ForestShape(w http.ResponseWriter, e *httpx.Error) {
	if e.Code == "" {
		httpx.WriteJSON(w, e.Status, map[string]string{"error": e.Message})
		return
	}
	httpx.WriteJSON(w, e.Status, forestError{Errors: []forestErrorItem{{Status: e.Status, Name: e.Code, Detail: e.Message}}})
}
