package audit

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/impersonator/impersonator/internal/httpx"
)

// The customer's own history: every impersonation of one record, built
// from the audit log's per-subject index by grouping the events of each
// session (its impersonation.redeemed event starts it; its session.ended or
// session.revoked event ends it).

// History limits.
const (
	DefaultHistoryLimit = 20
	MaxHistoryLimit     = 200
)

// HistoryActor is the admin as the customer's history shows them: a name
// and a team; the email only when asked for.
type HistoryActor struct {
	Name  string `json:"name"`
	Team  string `json:"team"`
	Email string `json:"email,omitempty"`
}

// Impersonation is one session of the history.
type Impersonation struct {
	SessionID string       `json:"session_id"`
	StartedAt time.Time    `json:"started_at"`
	EndedAt   *time.Time   `json:"ended_at,omitempty"`   // absent while the session is live
	EndReason *string      `json:"end_reason,omitempty"` // logout, idle timeout, revoked …
	Actor     HistoryActor `json:"actor"`
	Reason    string       `json:"reason"`
	Scope     string       `json:"scope"`
	// Delivery is how the token reached the browser: webhook or redirect
	// (which credential opened an auto-delivery session); absent when the
	// events read do not say.
	Delivery string `json:"delivery,omitempty"`
	// Requests is the number of requests the session check saw during
	// the session (its activity trail); absent when not asked for.
	Requests *int64 `json:"requests,omitempty"`
}

// HistoryPage is one page of a history, newest first.
type HistoryPage struct {
	Impersonations []Impersonation `json:"impersonations"`
	NextCursor     *string         `json:"next_cursor"`
}

// HistoryOptions shape a history page.
type HistoryOptions struct {
	Limit      int
	Cursor     string // the stream position of the last impersonation of the previous page
	ActorEmail bool   // include the admins' emails
	// Live reports whether a session is still live; a session whose end
	// is not among the events read is looked up with it.
	Live func(ctx context.Context, sid string) (bool, error)
	// Requests, when set, returns the number of requests recorded for
	// each session id (the activity trail); the page's impersonations
	// then carry theirs.
	Requests func(ctx context.Context, sids []string) ([]int64, error)
}

// LapsedUnrecorded is the end_reason of a session that lapsed by itself
// and whose end has not been recorded yet (the sweeper records it).
const LapsedUnrecorded = "lapsed (its end is not recorded yet)"

type sessionEnd struct {
	at     time.Time
	reason string
}

func endOf(e Event) sessionEnd {
	reason := e.Detail
	if e.Type == Revoked && !strings.HasPrefix(reason, "revoked") {
		reason = "revoked: " + reason
	}
	return sessionEnd{at: e.Time, reason: reason}
}

// History returns the impersonations of subj ("collection:id"), newest
// first. It reads the subject's index from the cursor down to one
// impersonation past the page; the ends of this page's sessions that lie
// above the cursor (they ended after a newer impersonation started) are
// looked for only for sessions that are no longer live, from the newest
// down to the cursor, so a page costs the subject's matches, not the log.
func (l *Log) History(ctx context.Context, subj string, o HistoryOptions) (HistoryPage, error) {
	if o.Limit <= 0 {
		o.Limit = DefaultHistoryLimit
	}
	o.Limit = min(o.Limit, MaxHistoryLimit)
	f := Filter{Subject: subj}
	page := HistoryPage{Impersonations: []Impersonation{}}
	ends := map[string]sessionEnd{}
	var positions []string
	byToken := map[string]int{} // token id -> index in the page, for its delivery
	more := false
	err := l.Walk(ctx, f, o.Cursor, func(e Entry) bool {
		ev := e.Event
		switch {
		case ev.Type == Minted:
			if i, ok := byToken[ev.TokenID]; ok && ev.TokenID != "" && page.Impersonations[i].Delivery == "" {
				page.Impersonations[i].Delivery = mintedDelivery(ev.Detail, ev.TokenID)
			}
		case ev.SessionID == "":
		case ev.Type == Ended || ev.Type == Revoked:
			if _, ok := ends[ev.SessionID]; !ok {
				ends[ev.SessionID] = endOf(ev)
			}
		case ev.Type == Redeemed:
			if len(page.Impersonations) == o.Limit {
				more = true
				return false
			}
			scope := ev.Scope
			if scope == "" {
				scope = "full"
			}
			it := Impersonation{SessionID: ev.SessionID, StartedAt: ev.Time,
				Actor:  HistoryActor{Name: ev.Actor.Name, Team: ev.Actor.Team},
				Reason: ev.Reason, Scope: scope, Delivery: redeemedDelivery(ev.Detail)}
			if ev.TokenID != "" {
				byToken[ev.TokenID] = len(page.Impersonations)
			}
			if o.ActorEmail {
				it.Actor.Email = ev.Actor.Email
			}
			page.Impersonations = append(page.Impersonations, it)
			positions = append(positions, e.StreamID)
		}
		return true
	})
	if err != nil {
		return HistoryPage{}, err
	}
	// Ends of sessions not seen below the cursor: live, or above it.
	unresolved := map[string]bool{}
	for i := range page.Impersonations {
		it := &page.Impersonations[i]
		if end, ok := ends[it.SessionID]; ok {
			it.EndedAt, it.EndReason = &end.at, &end.reason
			continue
		}
		live := false
		if o.Live != nil {
			if live, err = o.Live(ctx, it.SessionID); err != nil {
				return HistoryPage{}, err
			}
		}
		if !live {
			unresolved[it.SessionID] = true
		}
	}
	if len(unresolved) > 0 && o.Cursor != "" {
		err := l.Walk(ctx, f, "", func(e Entry) bool {
			if streamBefore(e.StreamID, o.Cursor) {
				return false
			}
			if ev := e.Event; (ev.Type == Ended || ev.Type == Revoked) && unresolved[ev.SessionID] {
				ends[ev.SessionID] = endOf(ev)
				delete(unresolved, ev.SessionID)
			}
			return len(unresolved) > 0
		})
		if err != nil {
			return HistoryPage{}, err
		}
	}
	for i := range page.Impersonations {
		it := &page.Impersonations[i]
		if it.EndedAt != nil {
			continue
		}
		if end, ok := ends[it.SessionID]; ok {
			it.EndedAt, it.EndReason = &end.at, &end.reason
		} else if unresolved[it.SessionID] {
			r := LapsedUnrecorded
			it.EndReason = &r
		}
	}
	if o.Requests != nil && len(page.Impersonations) > 0 {
		sids := make([]string, len(page.Impersonations))
		for i, it := range page.Impersonations {
			sids[i] = it.SessionID
		}
		counts, err := o.Requests(ctx, sids)
		if err != nil {
			return HistoryPage{}, err
		}
		for i := range page.Impersonations {
			if i < len(counts) {
				n := counts[i]
				page.Impersonations[i].Requests = &n
			}
		}
	}
	if more && len(positions) > 0 {
		c := positions[len(positions)-1]
		page.NextCursor = &c
	}
	return page, nil
}

// redeemedDelivery is the delivery an impersonation.redeemed event's
// detail names (auto delivery: which credential opened the session), or "".
func redeemedDelivery(detail string) string {
	switch {
	case strings.HasPrefix(detail, "webhook credential"):
		return "webhook"
	case strings.HasPrefix(detail, "redirect credential"):
		return "redirect"
	}
	return ""
}

// mintedDelivery is the delivery of token jti by its
// impersonation.minted event's detail ("delivery webhook", "delivery
// redirect", or auto's "delivery auto: webhook credential J1, redirect
// credential J2"), or "".
func mintedDelivery(detail, jti string) string {
	switch {
	case detail == "delivery webhook", strings.Contains(detail, "webhook credential "+jti):
		return "webhook"
	case detail == "delivery redirect", strings.Contains(detail, "redirect credential "+jti):
		return "redirect"
	}
	return ""
}

// streamBefore reports whether stream id a is at or before b.
func streamBefore(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	ami, _ := strconv.ParseUint(am, 10, 64)
	bmi, _ := strconv.ParseUint(bm, 10, 64)
	if ami != bmi {
		return ami < bmi
	}
	asi, _ := strconv.ParseUint(as, 10, 64)
	bsi, _ := strconv.ParseUint(bs, 10, 64)
	return asi <= bsi
}

// HistoryHandler answers GET /v1/subjects/{collection}/{id}/history?limit=&cursor=&include_actor_email=
// with {"impersonations":[…],"next_cursor":…}, newest first. subject reads
// the path's subject (a 400 error when it is not one); live reports whether
// a session is still live.
// requests, when set, gives each impersonation its activity trail's count.
func HistoryHandler(l *Log, subject func(*http.Request) (Subject, error), live func(context.Context, string) (bool, error),
	requests func(context.Context, []string) ([]int64, error)) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		subj, err := subject(r)
		if err != nil {
			return err
		}
		q := r.URL.Query()
		o := HistoryOptions{Limit: DefaultHistoryLimit, Cursor: q.Get("cursor"), Live: live, Requests: requests}
		if v := q.Get("limit"); v != "" {
			if o.Limit, err = strconv.Atoi(v); err != nil || o.Limit < 1 || o.Limit > MaxHistoryLimit {
				return httpx.Errorf(http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", MaxHistoryLimit), err)
			}
		}
		switch v := q.Get("include_actor_email"); v {
		case "", "false":
		case "true":
			o.ActorEmail = true
		default:
			return httpx.Errorf(http.StatusBadRequest, "include_actor_email must be true or false", nil)
		}
		page, err := l.History(r.Context(), subj.Collection+":"+subj.ID, o)
		return writePage(w, page, err)
	}
}
