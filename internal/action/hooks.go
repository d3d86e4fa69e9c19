package action

import (
	"encoding/json"
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

// HooksHandler answers the form hooks (load and change) with the action's
// form: one required Reason text field. It never mints, needs no
// authentication (the form is the same for everyone) and never answers an
// error that would abort the action: an unreadable change request gets the
// empty form.
func HooksHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, reasonForm(typedReason(r)))
	})
}

// typedReason returns the Reason typed so far, from a change hook's body
// ({"data":{"attributes":{"fields":[{"field":"Reason","value":…}]}}}).
func typedReason(r *http.Request) *string {
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
	for _, f := range body.Data.Attributes.Fields {
		if s, ok := f.Value.(string); ok && f.Field == reasonField {
			return &s
		}
	}
	return nil
}
