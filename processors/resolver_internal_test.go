package processors

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/wire"
)

// BenchmarkWaitingMemory measures what the resolver keeps per waiting
// event: the heap a partition's state grows by when it holds n events of
// webhook size, three per pass (b.N rounds of loading them).
func BenchmarkWaitingMemory(b *testing.B) {
	const n = 100_000
	recs := make([]*kgo.Record, n)
	for i := range recs {
		e := walletsync.Event{ID: fmt.Sprintf("twc-%032x", i), Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple,
			PassID: fmt.Sprintf("pass-%08d", i/3), PassType: "loyalty", OccurredAt: 1_772_000_000_000 + int64(i), Source: "webhook",
			Registration: &walletsync.Registration{Medium: "email", Origin: "campaign-spring", ActiveCount: 1, TotalCount: 1, HasActiveCount: true, HasTotalCount: true}}
		recs[i] = &kgo.Record{Key: wire.WaitingKey(e.PassID, e.ID), Value: wire.AppendWaiting(nil, &e), Timestamp: time.UnixMilli(e.OccurredAt), Offset: int64(i)}
	}
	value := 0
	for _, r := range recs {
		value += len(r.Value)
	}
	var perEvent float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		// The records' values are the fetch's bytes, which the state
		// keeps: copies made after the first reading count.
		fresh := make([]*kgo.Record, n)
		for i, r := range recs {
			c := *r
			c.Value = append([]byte(nil), r.Value...)
			fresh[i] = &c
		}
		ps := &passes{holders: map[string]holder{}, waiting: map[string][]waitingEvent{}}
		for _, r := range fresh {
			ps.apply(r)
		}
		fresh = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		perEvent = float64(after.HeapAlloc-before.HeapAlloc) / n
		if ps.n != n {
			b.Fatalf("%d waiting, want %d", ps.n, n)
		}
		runtime.KeepAlive(ps)
	}
	b.ReportMetric(perEvent, "bytes/event")
	b.ReportMetric(float64(value)/n, "value-bytes/event")
}
