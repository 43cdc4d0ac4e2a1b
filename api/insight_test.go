package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/walletsync/walletsync/api"
	"github.com/walletsync/walletsync/queries"
)

// engine answers every query with one row naming it, and records what it
// was asked.
type engine struct{ asked []queries.Query }

func (e *engine) Insight(_ context.Context, q queries.Query) (queries.Answer, error) {
	e.asked = append(e.asked, q)
	return q.Answer([]queries.Row{{"cohortWeek": "2026-03-02", "passType": "loyalty", "issued": 2, "within1d": 1, "within7d": 1, "within30d": 2}}), nil
}

// GET /v1/insights/funnel reaches the engine as the funnel query and
// answers SPEC §7's JSON; a by parameter, which only daily takes, or a bad
// range is a 400 with the reason, and never reaches the engine.
func TestFunnelInsightOverHTTP(t *testing.T) {
	e := &engine{}
	mux := http.NewServeMux()
	(&api.API{Insights: e}).Handle(mux)
	for _, c := range []struct {
		query string
		code  int
		body  string
	}{
		{"from=2026-03-02&to=2026-03-09", 200, `{"query":"funnel","from":"2026-03-02","to":"2026-03-09","rows":[{"cohortWeek":"2026-03-02","issued":2,"passType":"loyalty","within1d":1,"within30d":2,"within7d":1}]}` + "\n"},
		{"from=2026-03-02&to=2026-03-09&by=passType", 400, `{"error":"by applies to the daily insight only"}` + "\n"},
		{"from=2026-03-09&to=2026-03-02", 400, `{"error":"from must be before to (to is exclusive)"}` + "\n"},
	} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", "/v1/insights/funnel?"+c.query, nil))
		if w.Code != c.code || w.Body.String() != c.body {
			t.Errorf("GET /v1/insights/funnel?%s: %d %s, want %d %s", c.query, w.Code, w.Body.String(), c.code, c.body)
		}
	}
	if len(e.asked) != 1 || e.asked[0].Name != queries.Funnel || e.asked[0].By != "" {
		t.Errorf("the engine was asked %+v, want the one funnel query", e.asked)
	}
}
