package action

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/ident"
	"github.com/impersonator/impersonator/internal/store"
)

// The Impersonation history action: a reviewer opens a record in the admin
// panel and reads who impersonated it, when, why and what happened, in the
// action's HTML result ({"success":…,"html":…}). It reads the record's
// subject index (audit.Log.History, as GET /v1/subjects/…/history does),
// never the whole log, and each review is an audit.viewed event.

// Historian reads a record's impersonations, newest first.
type Historian interface {
	History(ctx context.Context, subj string, o audit.HistoryOptions) (audit.HistoryPage, error)
}

// HistoryStore appends the review's event, and a refused review's event
// folded per admin (a refused admin cannot flood the log).
type HistoryStore interface {
	Append(ctx context.Context, ev audit.Encoded) (string, error)
	AppendFolded(ctx context.Context, ev audit.Encoded, f store.Fold) (folded bool, err error)
}

// HistoryOptions configure HistoryHandler.
type HistoryOptions struct {
	Log      *slog.Logger
	Auth     *Authenticator
	Policies *PolicyHolder
	Store    HistoryStore
	History  Historian
	// Live and Requests are handed to the history (see
	// audit.HistoryOptions).
	Live     func(ctx context.Context, sid string) (bool, error)
	Requests func(ctx context.Context, sids []string) ([]int64, error)
	Events   audit.Encoder
}

// HistoryShown is how many impersonations the action shows, newest first
// (the admin API pages through all of them).
const HistoryShown = 50

// HistoryHandler answers the Impersonation history action, on the legacy
// path and the new agents' path (whose {collection} must match the body's).
func HistoryHandler(o HistoryOptions) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		policy := o.Policies.Load()
		admin, err := o.Auth.Authenticate(r)
		if errors.Is(err, errNotConfigured) {
			return historyPublic(&httpx.Error{Status: http.StatusServiceUnavailable, Cause: err})
		}
		if err != nil {
			return historyPublic(&unauthorized{cause: err})
		}
		ev := audit.Event{
			Type: audit.Viewed,
			Actor: audit.Actor{ID: admin.ID, Email: admin.Email, Team: admin.Team, Role: admin.Role,
				Name: admin.Name(), PermissionLevel: admin.PermissionLevel},
			IP:        httpx.ClientIP(r.Context()),
			UserAgent: r.UserAgent(),
			RequestID: httpx.RequestID(r.Context()),
		}
		subj, err := historyTarget(r, policy.IDs)
		if err != nil {
			return historyPublic(err)
		}
		ev.Subject = subj
		if ok, detail := policy.mayReview(admin); !ok {
			return historyPublic(o.refuse(r, ev, &forbidden{rule: ruleReviewers, detail: detail}))
		}
		page, err := o.History.History(r.Context(), subj.Collection+":"+subj.ID, audit.HistoryOptions{
			Limit: HistoryShown, ActorEmail: true, Live: o.Live, Requests: o.Requests})
		if err != nil {
			return historyPublic(httpx.Unavailable(err))
		}
		html, err := renderHistory(subj, page)
		if err != nil {
			return historyPublic(err)
		}
		ev.Detail = fmt.Sprintf("impersonation history in the admin panel: %d impersonations shown", len(page.Impersonations))
		if page.NextCursor != nil {
			ev.Detail += " (the newest; there are more)"
		}
		enc, err := o.Events.Encode(ev)
		if err != nil {
			return historyPublic(err)
		}
		// The review is recorded before it is shown: no audit write, no
		// history (fail closed).
		if _, err := o.Store.Append(r.Context(), enc); err != nil {
			return historyPublic(httpx.Unavailable(err))
		}
		httpx.WriteJSON(w, http.StatusOK, historyAnswer{
			Success: fmt.Sprintf("Impersonation history of %s %s", subj.Collection, subj.ID),
			HTML:    html,
		})
		return nil
	}
}

// historyAnswer is Forest's HTML result; field order is the wire order.
type historyAnswer struct {
	Success string `json:"success"`
	HTML    string `json:"html"`
}

// historyTarget reads the record from the action request: one id of one
// collection, in the one spelling of the collection's id kind (ids), as
// the action mints it, matching the new agents' path.
func historyTarget(r *http.Request, ids map[string]ident.Kind) (audit.Subject, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		if e := httpx.BodyError(r, err); e != nil && e.Status != http.StatusRequestEntityTooLarge {
			return audit.Subject{}, e
		}
		return audit.Subject{}, refuse("request body larger than %d bytes", maxBody)
	}
	req, err := decodeRequest(body)
	if err != nil {
		return audit.Subject{}, err
	}
	a := req.Data.Attributes
	switch {
	case a.CollectionName == "":
		return audit.Subject{}, refuse("collection_name is required")
	case a.AllRecords || len(a.IDs) != 1:
		return audit.Subject{}, refuse("the impersonation history is of exactly one record")
	}
	id, err := idString(ids[a.CollectionName], a.IDs[0])
	if err != nil {
		return audit.Subject{}, err
	}
	if c := chi.URLParam(r, "collection"); c != "" && c != a.CollectionName {
		return audit.Subject{}, refuse("collection_name %q does not match the action path's collection %q", a.CollectionName, c)
	}
	return audit.Subject{Collection: a.CollectionName, ID: id}, nil
}

// refuse records a refused review (audit.viewed, detail "refused: rule
// …", folded per admin like the action's denials) and returns the refusal;
// one that cannot be recorded becomes a 503.
func (o *HistoryOptions) refuse(r *http.Request, ev audit.Event, f *forbidden) error {
	ev.Detail = "refused: rule " + f.rule + ": " + f.detail
	enc, err := o.Events.Encode(ev)
	if err != nil {
		return err
	}
	summary := ev
	summary.Detail = "folded: " + store.FoldedMarker + " more refused reviews of this admin in the last minute were counted, not recorded one by one"
	sum, err := o.Events.Encode(summary)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	if _, err := o.Store.AppendFolded(ctx, enc, store.Fold{N: denialFold, Window: denialWindow, Who: []string{"review", ev.Actor.ID}, Summary: sum}); err != nil {
		return httpx.Unavailable(err)
	}
	return f
}

// historyPublic is public, with a refusal's message of its own.
func historyPublic(err error) *httpx.Error {
	e := public(err)
	var frb *forbidden
	if errors.As(err, &frb) {
		e.Message = "You are not allowed to review impersonations."
	}
	if e.Status == http.StatusInternalServerError {
		e.Message = "Internal error."
	}
	return e
}

// HistoryHooksHandler answers the Impersonation history action's form
// hooks (load and change): the form has no field, so the action runs at
// once. It needs the Forest JWT (401 otherwise), as the action does.
func HistoryHooksHandler(auth *Authenticator) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := auth.Authenticate(r); err != nil {
			if errors.Is(err, errNotConfigured) {
				return historyPublic(&httpx.Error{Status: http.StatusServiceUnavailable, Cause: err})
			}
			return historyPublic(&unauthorized{cause: err})
		}
		httpx.WriteJSON(w, http.StatusOK, form{Fields: []formField{}, Layout: []any{}})
		return nil
	}
}

// historyRow is one impersonation as the HTML shows it; html/template
// escapes every value.
type historyRow struct {
	Started  string
	Who      string
	Email    string
	Team     string
	Reason   string
	Scope    string
	Delivery string
	Ended    string
	Requests string
}

var historyTemplate = template.Must(template.New("history").Parse(`<div class="impersonation-history">
<p><strong>{{.Count}}</strong> impersonation{{if ne .Count 1}}s{{end}} of {{.Collection}} {{.ID}}{{if .More}} (the {{.Count}} newest; the admin API lists all){{end}}, newest first.</p>
{{- if .Rows}}
<table>
<thead><tr><th>When (UTC)</th><th>Who</th><th>Reason</th><th>Scope</th><th>Delivery</th><th>Ended</th><th>Requests</th></tr></thead>
<tbody>
{{- range .Rows}}
<tr><td>{{.Started}}</td><td>{{.Who}}{{if .Email}} &lt;{{.Email}}&gt;{{end}}{{if .Team}} ({{.Team}}){{end}}</td><td>{{.Reason}}</td><td>{{.Scope}}</td><td>{{.Delivery}}</td><td>{{.Ended}}</td><td>{{.Requests}}</td></tr>
{{- end}}
</tbody>
</table>
{{- end}}
</div>`))

const historyTime = "2006-01-02 15:04:05"

// renderHistory renders a history page as the action's HTML.
func renderHistory(subj audit.Subject, page audit.HistoryPage) (string, error) {
	rows := make([]historyRow, 0, len(page.Impersonations))
	for _, it := range page.Impersonations {
		row := historyRow{
			Started: it.StartedAt.UTC().Format(historyTime), Who: it.Actor.Name, Email: it.Actor.Email, Team: it.Actor.Team,
			Reason: it.Reason, Scope: it.Scope, Delivery: it.Delivery, Ended: "live", Requests: "",
		}
		if row.Who == "" {
			row.Who = it.Actor.Email
			row.Email = ""
		}
		if row.Delivery == "" {
			row.Delivery = "unknown"
		}
		if it.EndReason != nil {
			row.Ended = *it.EndReason
			if it.EndedAt != nil {
				row.Ended = it.EndedAt.UTC().Format(historyTime) + ": " + row.Ended
			}
		}
		if it.Requests != nil {
			row.Requests = fmt.Sprint(*it.Requests)
		}
		rows = append(rows, row)
	}
	var b bytes.Buffer
	err := historyTemplate.Execute(&b, struct {
		Count          int
		Collection, ID string
		More           bool
		Rows           []historyRow
	}{len(rows), subj.Collection, subj.ID, page.NextCursor != nil, rows})
	return b.String(), err
}
