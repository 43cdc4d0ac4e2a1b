package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/internal/backoff"
)

// testBatcher batches records by count (per, 0: no bound) and by age
// (after its first record, 0: never), and flushes through the test's
// flush hook (nil: always succeeds).
type testBatcher struct {
	per   int
	after time.Duration
	flush func(ctx context.Context, n, attempt int) error // n: the batch's number, from 0

	mu       sync.Mutex
	recs     []*kgo.Record
	first    time.Time
	added    int // data records, markers left out
	markers  int
	overfull bool // a poll gave more than Room
	takes    int
	attempts []int       // per batch
	flushed  []Offsets   // what each successful Flush returned, in order
	commits  []Offsets   // what Commit got, in order
	flushAt  []time.Time // when each Flush succeeded
	firstAt  []time.Time // when each batch got its first record
	stopped  []bool      // each successful Flush: was its ctx already done
}

type testBatch struct {
	n     int
	recs  []*kgo.Record
	first time.Time
}

func (b *testBatcher) Add(r *kgo.Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.first.IsZero() {
		b.first = time.Now()
	}
	b.recs = append(b.recs, r)
	if r.Attrs.IsControl() {
		b.markers++
	} else {
		b.added++
	}
	if b.per > 0 && len(b.recs) > b.per {
		b.overfull = true
	}
}

func (b *testBatcher) Room() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.per <= 0 {
		return 0
	}
	return b.per - len(b.recs)
}

func (b *testBatcher) Due(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.recs) > 0 && (b.per > 0 && len(b.recs) >= b.per || b.after > 0 && now.Sub(b.first) >= b.after)
}

func (b *testBatcher) Deadline() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.recs) == 0 || b.after <= 0 {
		return time.Time{}
	}
	return b.first.Add(b.after)
}

func (b *testBatcher) Take() testBatch {
	b.mu.Lock()
	defer b.mu.Unlock()
	tb := testBatch{n: b.takes, recs: b.recs, first: b.first}
	b.takes++
	b.attempts = append(b.attempts, 0)
	b.recs, b.first = nil, time.Time{}
	return tb
}

func (b *testBatcher) Flush(ctx context.Context, tb testBatch, attempt int) (Offsets, error) {
	b.mu.Lock()
	b.attempts[tb.n] = attempt
	hook := b.flush
	b.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, tb.n, attempt); err != nil {
			return nil, err
		}
	}
	offs := Offsets{}
	for _, r := range tb.recs {
		if offs[r.Topic] == nil {
			offs[r.Topic] = map[int32]kgo.EpochOffset{}
		}
		offs[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
	}
	b.mu.Lock()
	b.flushed = append(b.flushed, offs)
	b.flushAt = append(b.flushAt, time.Now())
	b.firstAt = append(b.firstAt, tb.first)
	b.stopped = append(b.stopped, ctx.Err() != nil)
	b.mu.Unlock()
	return offs, nil
}

func (b *testBatcher) commit(_ context.Context, offs Offsets) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.commits = append(b.commits, offs)
}

func (b *testBatcher) snapshot() (added, takes, commits, flushed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.added, b.takes, len(b.commits), len(b.flushed)
}

// consumeFixture is a kfake cluster with topic t of two partitions and a
// read_committed consumer of it that keeps control records, as the sinks'.
type consumeFixture struct {
	t    *testing.T
	prod *kgo.Client
	cons *kgo.Client
}

func newConsumeFixture(t *testing.T) *consumeFixture {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(append(ClientOpts(c.ListenAddrs(), "producer"), kgo.DefaultProduceTopic("t"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("consume-test"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	cons, err := kgo.NewClient(append(ClientOpts(c.ListenAddrs(), "consumer"),
		kgo.ConsumeTopics("t"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cons.Close)
	return &consumeFixture{t: t, prod: prod, cons: cons}
}

// produce writes n records over both partitions in one transaction, so that
// each partition also gets a commit marker; it returns the end offsets.
func (f *consumeFixture) produce(n int) map[int32]int64 {
	f.t.Helper()
	ctx := context.Background()
	if err := f.prod.BeginTransaction(); err != nil {
		f.t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Partition: int32(i % 2), Value: fmt.Appendf(nil, "r%d", i)})
	}
	if err := f.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		f.t.Fatal(err)
	}
	if err := f.prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		f.t.Fatal(err)
	}
	ends := map[int32]int64{}
	for _, r := range recs {
		ends[r.Partition] = max(ends[r.Partition], r.Offset+2) // after the record and the marker
	}
	return ends
}

// run starts the loop; stop cancels it and fails the test unless the loop
// then ends within a second, with nil.
func run(t *testing.T, cl *kgo.Client, b *testBatcher, cfg ConsumeConfig) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if cfg.Commit == nil {
		cfg.Commit = b.commit
	}
	go func() { done <- ConsumeBatches(ctx, cl, b, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("ConsumeBatches: %v", err)
				}
			case <-time.After(time.Second):
				t.Error("ConsumeBatches did not end within a second of its context")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Records are committed only once the Flush of their batch returned them,
// exactly what it returned, in order; a failing Flush is retried with the
// same batch and nothing is committed meanwhile; batches of only markers
// are committed too, so the commits reach the end of the log.
func TestConsumeBatchesCommitsOnlyWhatFlushReturned(t *testing.T) {
	for _, pipeline := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipeline=%v", pipeline), func(t *testing.T) {
			f := newConsumeFixture(t)
			ends := f.produce(40)
			release := make(chan struct{})
			b := &testBatcher{per: 10, after: 50 * time.Millisecond}
			b.flush = func(ctx context.Context, n, attempt int) error {
				if n != 0 {
					return nil
				}
				if _, _, commits, _ := b.snapshot(); commits != 0 {
					t.Errorf("attempt %d of the first batch: %d commits already", attempt, commits)
				}
				if attempt < 3 {
					return errors.New("the store is down")
				}
				select { // the third attempt succeeds once the test says so
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			run(t, f.cons, b, ConsumeConfig{Retry: backoff.Policy{Base: 10 * time.Millisecond, Max: 10 * time.Millisecond}, Pipeline: pipeline})
			waitFor(t, "the third attempt", func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				return len(b.attempts) > 0 && b.attempts[0] == 3
			})
			time.Sleep(200 * time.Millisecond)
			if _, _, commits, flushed := b.snapshot(); commits != 0 || flushed != 0 {
				t.Fatalf("%d commits, %d batches flushed while the first batch's Flush had not returned", commits, flushed)
			}
			close(release)
			waitFor(t, "commits to reach the end of the log", func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				at := map[int32]int64{}
				for _, c := range b.commits {
					for p, o := range c["t"] {
						at[p] = o.Offset
					}
				}
				return at[0] == ends[0] && at[1] == ends[1]
			})
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.added != 40 || b.markers != 2 {
				t.Errorf("added %d records and %d markers, want 40 and 2", b.added, b.markers)
			}
			if b.overfull {
				t.Error("a poll returned more records than Room")
			}
			if len(b.commits) != len(b.flushed) {
				t.Fatalf("%d commits for %d flushed batches", len(b.commits), len(b.flushed))
			}
			for i := range b.commits {
				if fmt.Sprint(b.commits[i]) != fmt.Sprint(b.flushed[i]) {
					t.Errorf("commit %d is %v, its Flush returned %v", i, b.commits[i], b.flushed[i])
				}
			}
		})
	}
}

// The poll waits only until the Batcher's Deadline: a batch due by age is
// flushed then although no record follows, and not before.
func TestConsumeBatchesFlushesAtTheDeadline(t *testing.T) {
	f := newConsumeFixture(t)
	f.produce(3)
	b := &testBatcher{after: 300 * time.Millisecond}
	run(t, f.cons, b, ConsumeConfig{})
	waitFor(t, "a flush", func() bool { _, _, _, flushed := b.snapshot(); return flushed > 0 })
	b.mu.Lock()
	defer b.mu.Unlock()
	if waited := b.flushAt[0].Sub(b.firstAt[0]); waited < 300*time.Millisecond || waited > 3*time.Second {
		t.Errorf("flushed %v after the batch's first record, want its 300ms age", waited)
	}
}

// Pipelined: while one batch is being flushed, one more waits for the
// writer and the loop, holding a third, polls nothing more.
func TestConsumeBatchesPipelineHoldsTheLoopBack(t *testing.T) {
	f := newConsumeFixture(t)
	ends := f.produce(100)
	release := make(chan struct{})
	b := &testBatcher{per: 10}
	b.flush = func(ctx context.Context, n, _ int) error {
		if n == 0 {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	run(t, f.cons, b, ConsumeConfig{Pipeline: true})
	waitFor(t, "three batches taken", func() bool { _, takes, _, _ := b.snapshot(); return takes == 3 })
	time.Sleep(300 * time.Millisecond)
	if added, takes, commits, _ := b.snapshot(); added != 30 || takes != 3 || commits != 0 {
		t.Fatalf("with the first batch's Flush held: %d records added, %d batches taken, %d commits; want 30, 3, 0", added, takes, commits)
	}
	close(release)
	waitFor(t, "every record", func() bool { added, _, _, _ := b.snapshot(); return added == 100 })
	b.mu.Lock()
	defer b.mu.Unlock()
	last := map[int32]int64{}
	for i, c := range b.commits {
		for p, o := range c["t"] {
			if o.Offset < last[p] {
				t.Errorf("commit %d moves partition %d back to %d from %d", i, p, o.Offset, last[p])
			}
			last[p] = o.Offset
		}
	}
	if last[0] > ends[0] || last[1] > ends[1] {
		t.Errorf("committed %v past the ends %v", last, ends)
	}
}

// Cancelling the context ends the loop: mid-retry, nothing is committed;
// with FlushOnStop the batch in hand is flushed once more and committed.
func TestConsumeBatchesEndsWithItsContext(t *testing.T) {
	t.Run("mid-retry", func(t *testing.T) {
		f := newConsumeFixture(t)
		f.produce(20)
		b := &testBatcher{per: 5}
		b.flush = func(context.Context, int, int) error { return errors.New("the store is down") }
		stop := run(t, f.cons, b, ConsumeConfig{Retry: backoff.Policy{Base: 5 * time.Millisecond, Max: 5 * time.Millisecond}, Pipeline: true})
		waitFor(t, "retries", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.attempts) > 0 && b.attempts[0] >= 3
		})
		stop()
		if _, _, commits, _ := b.snapshot(); commits != 0 {
			t.Errorf("%d commits of batches that were never written", commits)
		}
	})
	t.Run("idle", func(t *testing.T) {
		f := newConsumeFixture(t)
		b := &testBatcher{per: 5}
		stop := run(t, f.cons, b, ConsumeConfig{})
		time.Sleep(100 * time.Millisecond)
		stop()
	})
	t.Run("flush-on-stop", func(t *testing.T) {
		f := newConsumeFixture(t)
		ends := f.produce(6)
		b := &testBatcher{per: 1000} // never due while running
		stop := run(t, f.cons, b, ConsumeConfig{FlushOnStop: true})
		waitFor(t, "the records and markers", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.added == 6 && b.markers == 2
		})
		if _, _, commits, _ := b.snapshot(); commits != 0 {
			t.Fatalf("%d commits before any batch was due", commits)
		}
		stop()
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.flushed) != 1 || !b.stopped[0] || len(b.commits) != 1 {
			t.Fatalf("at the stop: %d flushes (stopped: %v), %d commits; want one of each", len(b.flushed), b.stopped, len(b.commits))
		}
		if got := b.commits[0]["t"]; got[0].Offset != ends[0] || got[1].Offset != ends[1] {
			t.Errorf("committed %v at the stop, want the ends %v", got, ends)
		}
	})
}
