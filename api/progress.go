package api

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// DefaultProgressDeadline is how long a consumer with lag may go without
// moving before Progress calls it stalled: past the processors' transaction
// timeout (30 s), which bounds the longest legitimate wait (another
// member's open transaction), with room to spare.
const DefaultProgressDeadline = 45 * time.Second

// Progress watches the pipeline's consumers (Lag.Compute, every second): one
// that has lag and whose position has not moved for Deadline is stalled.
// Readiness reads it: a pipeline that accepts events it will never fold is
// the failure walletsync exists to prevent, and without a deadline a
// wedged processor looks exactly like a busy one.
type Progress struct {
	Lag      *Lag
	Deadline time.Duration // default DefaultProgressDeadline
	Every    time.Duration // default 1 s
	Logger   *slog.Logger
	// Doing says, for consumers that run in this process, what they are
	// doing now; a stall's reason and log line carry it.
	Doing map[string]func() string

	mu       sync.Mutex
	measured bool // a Compute has succeeded (the topics exist)
	err      error
	state    map[string]*consumerState
}

type consumerState struct {
	lag, pos int64
	moved    time.Time // the position last moved, or the lag was 0 or appeared
	stalled  bool
}

// Run samples until ctx ends.
func (p *Progress) Run(ctx context.Context) error {
	every := p.Every
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		p.sample(ctx, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Progress) deadline() time.Duration {
	if p.Deadline <= 0 {
		return DefaultProgressDeadline
	}
	return p.Deadline
}

func (p *Progress) sample(ctx context.Context, now time.Time) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rep, err := p.Lag.Compute(cctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	p.observe(rep, err, now)
}

// observe takes one measurement in.
func (p *Progress) observe(rep Report, err error, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
	if err != nil {
		return
	}
	p.measured = true
	if p.state == nil {
		p.state = map[string]*consumerState{}
	}
	for name, lag := range rep.Consumers {
		pos := rep.Positions[name]
		st := p.state[name]
		if st == nil {
			st = &consumerState{pos: pos, moved: now}
			p.state[name] = st
		}
		// The clock runs from the first sample with lag: a consumer is
		// not late for work that did not exist yet.
		if lag == 0 || st.lag == 0 || pos != st.pos {
			st.moved = now
		}
		st.lag, st.pos = lag, pos
		stalled := lag > 0 && now.Sub(st.moved) >= p.deadline()
		if stalled && !st.stalled && p.Logger != nil {
			p.Logger.Error("a consumer makes no progress while it has lag", "consumer", name, "lag", lag, "for", now.Sub(st.moved).Round(time.Second).String(), "doing", p.doing(name))
		}
		if !stalled && st.stalled && p.Logger != nil {
			p.Logger.Info("a stalled consumer moves again", "consumer", name, "lag", lag)
		}
		st.stalled = stalled
	}
}

func (p *Progress) doing(name string) string {
	if f := p.Doing[name]; f != nil {
		return f()
	}
	return "not in this process"
}

// Problems says what stops the consumers named in gate from being ready:
// the pipeline not measured yet (its topics not yet listed), Kafka not
// answering the measurement, or a stalled consumer, with its reason.
// Stalled consumers outside gate come back in degraded.
func (p *Progress) Problems(gate ...string) (problems, degraded map[string]string) {
	return p.problemsAt(gate, time.Now())
}

func (p *Progress) problemsAt(gate []string, now time.Time) (problems, degraded map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	problems, degraded = map[string]string{}, map[string]string{}
	switch {
	case p.err != nil:
		problems["pipeline"] = "cannot measure the lag: " + p.err.Error()
		return problems, degraded
	case !p.measured:
		problems["pipeline"] = "the pipeline's topics and lag are not measured yet"
		return problems, degraded
	}
	for _, name := range slices.Sorted(maps.Keys(p.state)) {
		st := p.state[name]
		if !st.stalled {
			continue
		}
		reason := fmt.Sprintf("%d records behind and no progress for %s; %s", st.lag, now.Sub(st.moved).Round(time.Second), p.doing(name))
		if slices.Contains(gate, name) {
			problems[name] = reason
		} else {
			degraded[name] = reason
		}
	}
	return problems, degraded
}
