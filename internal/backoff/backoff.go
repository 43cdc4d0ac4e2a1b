// Package backoff is walletsync's one retry wait: a delay that doubles from
// a base up to a cap, optionally jittered, and a wait that ends with its
// context. Every retry loop (ClickHouse inserts, archive rolls, CRM
// deliveries, Pass API pages, fencing, partition reads) uses it, so that a
// retry schedule is read in one place and a stopping process never sleeps
// out a timer.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff: Base before the first retry, doubling
// each attempt, never more than Max.
type Policy struct {
	Base, Max time.Duration
	// Jitter draws each delay from [d/2, d], so that many clients failing
	// together do not come back in step.
	Jitter bool
}

// Delay is the wait before retry number attempt (1 is the first retry;
// 0 counts as 1).
func (p Policy) Delay(attempt int) time.Duration {
	d := min(p.Base<<min(max(attempt-1, 0), 30), p.Max)
	if d < p.Base { // shifted out of range
		d = p.Max
	}
	if p.Jitter && d > 0 {
		d = d/2 + rand.N(d/2+1)
	}
	return d
}

// Wait sleeps for d or until ctx ends, and returns ctx.Err() in that case.
func Wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
