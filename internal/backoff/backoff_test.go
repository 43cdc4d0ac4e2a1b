package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelayDoublesUpToMax(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 100, 200, 400, 800, 1000, 1000}
	for attempt, w := range want {
		if got := p.Delay(attempt); got != w*time.Millisecond {
			t.Errorf("Delay(%d) = %v, want %v", attempt, got, w*time.Millisecond)
		}
	}
	if got := p.Delay(1 << 20); got != time.Second {
		t.Errorf("Delay(huge) = %v, want the cap", got)
	}
}

func TestJitterStaysInTheUpperHalf(t *testing.T) {
	p := Policy{Base: 500 * time.Millisecond, Max: time.Minute, Jitter: true}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := p.Delay(3) // 2 s before jitter
		if d < time.Second || d > 2*time.Second {
			t.Fatalf("Delay(3) = %v, want within [1s, 2s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("%d distinct delays in 1000 draws: no jitter", len(seen))
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Wait(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Wait on a cancelled context = %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Wait slept although its context had ended")
	}
	if err := Wait(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
}
