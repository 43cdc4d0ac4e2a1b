package api

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A consumer is stalled only when it has lag and its position has not
// moved for the deadline; lag 0 or any move starts the clock again.
func TestProgressStallNeedsLagAndNoMove(t *testing.T) {
	p := &Progress{Deadline: 10 * time.Second, Doing: map[string]func() string{"proc": func() string { return "loading partitions" }}}
	t0 := time.Now().Add(-time.Hour)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	rep := func(procLag, procPos, sinkLag, sinkPos int64) Report {
		return Report{Consumers: map[string]int64{"proc": procLag, "sink": sinkLag}, Positions: map[string]int64{"proc": procPos, "sink": sinkPos}}
	}
	if problems, _ := p.Problems("proc"); problems["pipeline"] == "" {
		t.Errorf("ready before any measurement: %v", problems)
	}
	p.observe(Report{}, errors.New("UNKNOWN_TOPIC_OR_PARTITION"), at(0))
	if problems, _ := p.Problems("proc"); !strings.Contains(problems["pipeline"], "UNKNOWN_TOPIC") {
		t.Errorf("a failed measurement is not a problem: %v", problems)
	}
	steps := []struct {
		s                  int
		r                  Report
		procStall, sinkBad bool
	}{
		{0, rep(0, 100, 0, 10), false, false},
		{5, rep(50, 100, 5, 10), false, false},  // lag from 5 s on: the clock starts
		{14, rep(50, 100, 5, 10), false, false}, // 9 s without a move
		{15, rep(60, 100, 5, 10), true, true},   // 10 s: stalled
		{16, rep(10, 150, 5, 10), false, true},  // the processors moved
		{20, rep(0, 160, 0, 15), false, false},  // caught up
		{29, rep(7, 160, 0, 15), false, false},  // lag again: the clock starts
		{38, rep(7, 160, 0, 15), false, false},
		{39, rep(7, 160, 0, 15), true, false},
	}
	for _, st := range steps {
		p.observe(st.r, nil, at(st.s))
		problems, degraded := p.problemsAt([]string{"proc"}, at(st.s))
		if got := problems["proc"] != ""; got != st.procStall {
			t.Errorf("at %d s: processors stalled %v, want %v (%v)", st.s, got, st.procStall, problems)
		}
		if got := degraded["sink"] != ""; got != st.sinkBad {
			t.Errorf("at %d s: sink degraded %v, want %v (%v)", st.s, got, st.sinkBad, degraded)
		}
		if problems["sink"] != "" {
			t.Errorf("a consumer outside the gate made the process unready: %v", problems)
		}
		if st.procStall && !strings.Contains(problems["proc"], "loading partitions") {
			t.Errorf("the reason does not say what the consumer does: %q", problems["proc"])
		}
	}
}
