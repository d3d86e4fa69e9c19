package action

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/ident"
	"github.com/impersonator/impersonator/internal/token"
)

// maxBody caps the action's request body. Forest sends a few hundred bytes;
// 64 KiB leaves room for large values without inviting abuse.
const maxBody = 64 << 10

// request is the Forest custom action request (DESIGN.md 3.3). Only the
// attributes read here are declared; Forest adds fields over time and
// unknown ones are ignored.
type request struct {
	Data struct {
		Type       string     `json:"type"`
		Attributes attributes `json:"attributes"`
	} `json:"data"`
}

type attributes struct {
	CollectionName        string            `json:"collection_name"`
	IDs                   []json.RawMessage `json:"ids"`
	Values                map[string]any    `json:"values"`
	AllRecords            bool              `json:"all_records"`
	AllRecordsIDsExcluded []json.RawMessage `json:"all_records_ids_excluded"`
	SmartActionID         string            `json:"smart_action_id"`
	SignedApprovalRequest *string           `json:"signed_approval_request"`
	RequesterID           json.RawMessage   `json:"requester_id"`
}

// refusal is an action-level refusal: 400 {"error": msg}.
type refusal struct {
	msg          string
	nonCanonical bool // the record id was refused: audited as such
}

func (r *refusal) Error() string { return r.msg }

func refuse(format string, a ...any) error { return &refusal{msg: fmt.Sprintf(format, a...)} }

// errRequesterID: a raw requester_id in the body (422), which only a signed
// approval request may carry.
var errRequesterID = errors.New("requester_id must not be present")

// target is what the request asks for, after validation.
type target struct {
	Collection  string
	ID          string
	Reason      string
	Scope       string // token.ScopeRead or token.ScopeFull; "" when the request chose none
	RequesterID string // set only by a verified approval request
	approval    *approvalRequest
}

// decodeRequest parses body strictly enough: one JSON object with data.
func decodeRequest(body []byte) (*request, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var req request
	if err := dec.Decode(&req); err != nil {
		return nil, refuse("request body is not a Forest action request: %v", jsonProblem(err))
	}
	if dec.More() {
		return nil, refuse("request body has data after the JSON value")
	}
	return &req, nil
}

func jsonProblem(err error) string {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("%s has the wrong type", ute.Field)
	}
	return "malformed JSON"
}

// validate checks the attributes of one action request and extracts the
// target, its id in the one spelling of its collection's id kind (ids;
// nil: every collection undeclared). requesterAllowed is true only for a
// verified approval payload.
func (a *attributes) validate(requesterAllowed bool, ids map[string]ident.Kind) (target, error) {
	var t target
	if len(a.RequesterID) > 0 && string(a.RequesterID) != "null" {
		if !requesterAllowed {
			return t, errRequesterID
		}
		var v any
		if err := json.Unmarshal(a.RequesterID, &v); err != nil || scalarString(v) == "" {
			return t, refuse("requester_id is not an id")
		}
		t.RequesterID = scalarString(v)
	}
	if a.CollectionName == "" {
		return t, refuse("collection_name is required")
	}
	t.Collection = a.CollectionName
	if a.AllRecords {
		return t, refuse("impersonation needs exactly one record; all_records selections are refused")
	}
	if len(a.IDs) != 1 {
		return t, refuse("impersonation needs exactly one record, got %d ids", len(a.IDs))
	}
	id, err := idString(ids[t.Collection], a.IDs[0])
	if err != nil {
		return t, err
	}
	t.ID = id
	reason, ok := a.Values[reasonField]
	if !ok || reason == nil {
		return t, refuse("a reason is required")
	}
	s, ok := reason.(string)
	if !ok {
		return t, refuse("the reason must be text")
	}
	t.Reason = strings.TrimSpace(s)
	if t.Reason == "" {
		return t, refuse("a reason is required")
	}
	if v, ok := a.Values[accessField]; ok && v != nil {
		label, _ := v.(string)
		scope, known := accessScopes[label]
		if !known {
			return t, refuse("%s must be %q or %q", accessField, accessRead, accessFull)
		}
		t.Scope = scope
	}
	return t, nil
}

func idString(kind ident.Kind, raw json.RawMessage) (string, error) {
	id, err := kind.FromJSON(raw)
	if err != nil {
		return "", &refusal{msg: err.Error(), nonCanonical: true}
	}
	return id, nil
}

// approvalClaims is the payload of a Forest signed approval request: the
// original request's data, including its requester_id.
type approvalClaims struct {
	Data struct {
		Attributes attributes `json:"attributes"`
	} `json:"data"`
	jwt.RegisteredClaims
}

// maxApprovalAge bounds how long after it was signed an approval request
// can still be executed.
const maxApprovalAge = 24 * time.Hour

// approvalRequest is a verified approval: the attributes it carries, and
// what makes it single-use.
type approvalRequest struct {
	attrs *attributes
	id    string        // SHA-256 of the signed request: reserved once used
	ttl   time.Duration // until it expires: how long the reservation lasts
}

// approval verifies a Forest signed_approval_request (HS256 with
// FOREST_ENV_SECRET, as Forest's agents do): exp and iat are required, it
// is at most a day old, and it must be for this action (smart_action_id
// ending in "-impersonate", or exactly actionID when the route names one)
// and collection (the route's, when it names one). It returns the
// attributes it carries, which replace the request's own.
func approval(signed string, envSecret []byte, now func() time.Time, routeCollection string) (*approvalRequest, error) {
	if len(envSecret) == 0 {
		return nil, errors.New("approval requests are disabled: FOREST_ENV_SECRET is not set")
	}
	if len(signed) > maxBody {
		return nil, errors.New("approval request too large")
	}
	if err := token.CheckCompact(signed); err != nil {
		return nil, fmt.Errorf("approval request: malformed: %w", err)
	}
	var c approvalClaims
	tok, err := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(5*time.Second),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(now),
	).ParseWithClaims(signed, &c, func(*jwt.Token) (any, error) { return envSecret, nil })
	if err != nil {
		return nil, fmt.Errorf("approval request: %w", err)
	}
	if c.IssuedAt == nil {
		return nil, errors.New("approval request: iat is required")
	}
	if now().Sub(c.IssuedAt.Time) > maxApprovalAge {
		return nil, fmt.Errorf("approval request: signed %s ago, more than %s", now().Sub(c.IssuedAt.Time).Round(time.Second), maxApprovalAge)
	}
	a := &c.Data.Attributes
	if !isImpersonateAction(a.SmartActionID, a.CollectionName) {
		return nil, fmt.Errorf("approval request: smart_action_id %q is not this impersonate action", a.SmartActionID)
	}
	if routeCollection != "" && a.CollectionName != routeCollection {
		return nil, fmt.Errorf("approval request: collection %q is not the route's %q", a.CollectionName, routeCollection)
	}
	return &approvalRequest{attrs: a, id: approvalID(signed, tok.Signature), ttl: c.ExpiresAt.Sub(now()) + 5*time.Second}, nil
}

// approvalID is what reserves an approval: the SHA-256 of what it signs
// (its header and payload, whose exact text the HMAC covers) and of its
// signature's bytes re-encoded in the one canonical spelling, so that no
// other spelling of its signature is another approval. For the canonical
// text, the only one strict decoding accepts, it is the digest of the text
// itself, which is how approvals were reserved before.
func approvalID(signed string, sig []byte) string {
	input := signed[:strings.LastIndexByte(signed, '.')]
	h := sha256.New()
	h.Write([]byte(input))
	h.Write([]byte{'.'})
	h.Write([]byte(base64.RawURLEncoding.EncodeToString(sig)))
	return hex.EncodeToString(h.Sum(nil))
}

// isImpersonateAction reports whether a Forest smart_action_id names this
// action: "<collection>-impersonate" (Forest's id is the collection and the
// action name, dasherised).
func isImpersonateAction(id, collection string) bool {
	return collection != "" && strings.EqualFold(id, collection+"-impersonate")
}
