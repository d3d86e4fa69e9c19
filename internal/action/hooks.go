package action

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/impersonator/impersonator/internal/httpx"
)

// formField is one field of an action form in the agents' hook format.
type formField struct {
	Field        string  `json:"field"`
	Type         string  `json:"type"`
	IsRequired   bool    `json:"isRequired"`
	IsReadOnly   bool    `json:"isReadOnly"`
	Description  string  `json:"description"`
	DefaultValue *string `json:"defaultValue"`
	Value        *string `json:"value"`
	Enums        []any   `json:"enums"`
	Hook         *string `json:"hook"`
	Reference    *string `json:"reference"`
	WidgetEdit   any     `json:"widgetEdit"`
}

type form struct {
	Fields []formField `json:"fields"`
	Layout []any       `json:"layout"`
}

func reasonForm(value *string) form {
	return form{
		Fields: []formField{{
			Field:       reasonField,
			Type:        "String",
			IsRequired:  true,
			Description: "Why you need to log in as this customer (ticket number, request). Recorded in the audit log.",
			Value:       value,
		}},
		Layout: []any{},
	}
}

// accessFormField is the Access field: read only or full access, defaulting
// to the policy's default_access; value is the choice made so far.
func accessFormField(p *Policy, value *string) formField {
	def := accessLabel(p.defaultAccess())
	return formField{
		Field:        accessField,
		Type:         "Enum",
		IsRequired:   true,
		Description:  "Read only: the customer app refuses every change while you impersonate. Recorded in the audit log.",
		DefaultValue: &def,
		Value:        value,
		Enums:        []any{accessRead, accessFull},
	}
}

// HooksHandler answers the form hooks (load and change) with the action's
// form: a required Reason text field and, when the policy names
// default_access or full_access, a required Access choice (policy is read
// per request: it reloads). It never mints. It needs the Forest JWT, as the
// action does (401 without a valid one, 503 when FOREST_AUTH_SECRET is
// unset): the form reveals the policy's default_access. Past that it never
// answers an error that would abort the action: an unreadable change
// request gets the empty form.
func HooksHandler(auth *Authenticator, policy func() *Policy) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := auth.Authenticate(r); errors.Is(err, errNotConfigured) {
			return public(&httpx.Error{Status: http.StatusServiceUnavailable, Cause: err})
		} else if err != nil {
			return public(&unauthorized{cause: err})
		}
		typed := typedValues(r)
		f := reasonForm(typed[reasonField])
		if p := policy(); p.ShowsAccess() {
			access := typed[accessField]
			if access != nil && accessScopes[*access] == "" {
				access = nil
			}
			f.Fields = append(f.Fields, accessFormField(p, access))
		}
		httpx.WriteJSON(w, http.StatusOK, f)
		return nil
	}
}

// typedValues returns the text values typed so far, by field, from a
// change hook's body
// ({"data":{"attributes":{"fields":[{"field":"Reason","value":…}]}}}).
func typedValues(r *http.Request) map[string]*string {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil || len(b) == 0 {
		return nil
	}
	var body struct {
		Data struct {
			Attributes struct {
				Fields []struct {
					Field string `json:"field"`
					Value any    `json:"value"`
				} `json:"fields"`
			} `json:"attributes"`
		} `json:"data"`
	}
	if json.Unmarshal(b, &body) != nil {
		return nil
	}
	out := map[string]*string{}
	for _, f := range body.Data.Attributes.Fields {
		if s, ok := f.Value.(string); ok && (f.Field == reasonField || f.Field == accessField) && out[f.Field] == nil {
			out[f.Field] = &s
		}
	}
	return out
}
