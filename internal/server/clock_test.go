package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/audit"
)

// TestAuditOneClock: an event's time is its stream id's time (the Redis
// server's clock), not the writing instance's: with the service's clock
// weeks off (the deployment's clock is stopped at t0), the time the API
// shows is the stream id's millisecond, and since=<that time> selects the
// event while until=<that time> does not. Real redis-server.
func TestAuditOneClock(t *testing.T) {
	d := newDeployment(t, nil)
	if rec := d.mint(featAda, "users", "42", "ticket 1234: read the invoices", ""); rec.Code != 200 {
		t.Fatalf("mint: %d %s", rec.Code, rec.Body.String())
	}
	recs, err := d.st.Events(t.Context(), "-", "+", 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("stream: %d records, %v; want 1", len(recs), err)
	}
	msPart, _, _ := strings.Cut(recs[0].ID, "-")
	ms, _ := strconv.ParseInt(msPart, 10, 64)
	redisTime := time.UnixMilli(ms).UTC()
	if skew := redisTime.Sub(d.clock()); skew > -time.Hour && skew < time.Hour {
		t.Fatalf("the service's clock (%s) is not skewed from Redis's (%s): the test proves nothing", d.clock(), redisTime)
	}
	query := func(q url.Values) []audit.Event {
		t.Helper()
		rec := d.admin(http.MethodGet, "/v1/audit/events?"+q.Encode(), "")
		var page audit.Page
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &page) != nil {
			t.Fatalf("query %s: %d %s", q.Encode(), rec.Code, rec.Body.String())
		}
		return page.Events
	}
	evs := query(url.Values{})
	if len(evs) != 1 || !evs[0].Time.Equal(redisTime) {
		t.Fatalf("events %+v, want one at the stream id's time %s", evs, redisTime)
	}
	at := evs[0].Time.Format(time.RFC3339Nano)
	if got := query(url.Values{"since": {at}}); len(got) != 1 {
		t.Errorf("since=%s (the event's own time): %d events, want 1", at, len(got))
	}
	if got := query(url.Values{"until": {at}}); len(got) != 0 {
		t.Errorf("until=%s (exclusive): %d events, want 0", at, len(got))
	}
	if got := query(url.Values{"since": {evs[0].Time.Add(time.Millisecond).Format(time.RFC3339Nano)}}); len(got) != 0 {
		t.Errorf("since a millisecond later: %d events, want 0", len(got))
	}
	// Every reader shows the same time: the log's range (export, verify,
	// notifications) as well as the API.
	if got := d.events(); len(got) != 1 || !got[0].Time.Equal(redisTime) {
		t.Errorf("the log's range: %+v, want the stream id's time %s", got, redisTime)
	}
}

// rfc3339 matches the times of an answer.
var rfc3339 = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

// labelTimes replaces each distinct time in s by 2000-01-01T00:0N:00Z, N
// its rank in time order: what an answer says of its times (order,
// equality) without the Redis server's clock, still valid date-times.
func labelTimes(s string) string {
	var times []time.Time
	seen := map[string]bool{}
	for _, m := range rfc3339.FindAllString(s, -1) {
		if t, err := time.Parse(time.RFC3339Nano, m); err == nil && !seen[m] {
			seen[m] = true
			times = append(times, t)
		}
	}
	slices.SortFunc(times, time.Time.Compare)
	return rfc3339.ReplaceAllStringFunc(s, func(m string) string {
		t, err := time.Parse(time.RFC3339Nano, m)
		if err != nil {
			return m
		}
		return time.Date(2000, 1, 1, 0, slices.IndexFunc(times, t.Equal)+1, 0, 0, time.UTC).Format(time.RFC3339)
	})
}
