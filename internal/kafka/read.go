package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadPartition calls fn for every committed record of one partition from
// offset from (negative: the start of the log) up to the partition's last
// stable offset as it is when the call starts. It is how processors rebuild
// a partition's state, after WaitStable: only once no transaction is open is
// everything a previous owner committed below that offset.
func ReadPartition(ctx context.Context, brokers []string, adm *kadm.Client, topic string, part int32, from int64, fn func(*kgo.Record)) (int, error) {
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("listing end offsets of %s: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, part)
	if !ok || end.Err != nil {
		return 0, fmt.Errorf("end offset of %s/%d: %v", topic, part, end.Err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("listing start offsets of %s: %w", topic, err)
	}
	start, _ := starts.Lookup(topic, part)
	if from < start.Offset {
		from = start.Offset
	}
	if from >= end.Offset {
		return 0, nil
	}
	cl, err := kgo.NewClient(append(ClientOpts(brokers, "walletsync-restore"),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {part: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records (transaction markers) are kept so that the
		// position is known exactly and the loop ends at the stable offset.
		kgo.KeepControlRecords(),
		kgo.FetchMaxBytes(64<<20),
	)...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	n := 0
	next := from
	for next < end.Offset {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("reading %s/%d: %w", t, p, err) })
		if ferr != nil {
			return n, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if r.Attrs.IsControl() || r.Offset >= end.Offset {
				return
			}
			n++
			fn(r)
		})
	}
	return n, nil
}

// WaitStable waits until no transaction is open on one partition (its last
// stable offset has reached its high watermark) and returns how long that
// took. A transaction left open by an expelled or dead writer holds the
// stable offset back until the broker aborts it, and what others committed
// after it stays invisible meanwhile: a reader that stopped at that offset
// would see an old view of the partition as if it were the latest.
func WaitStable(ctx context.Context, adm *kadm.Client, topic string, part int32) (time.Duration, error) {
	start := time.Now()
	pause := 20 * time.Millisecond
	for {
		// The high watermark first: a stable offset listed after it that
		// has reached it proves nothing before it is still undecided.
		hwm, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			var lso kadm.ListedOffsets
			lso, err = adm.ListCommittedOffsets(ctx, topic)
			if err == nil {
				h, okH := hwm.Lookup(topic, part)
				l, okL := lso.Lookup(topic, part)
				switch {
				case !okH || !okL || h.Err != nil || l.Err != nil:
					err = fmt.Errorf("offsets of %s/%d unknown: %v %v", topic, part, h.Err, l.Err)
				case l.Offset >= h.Offset:
					return time.Since(start), nil
				}
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return time.Since(start), fmt.Errorf("waiting for %s/%d to be stable: %w (last: %v)", topic, part, ctx.Err(), err)
			}
			return time.Since(start), fmt.Errorf("waiting for %s/%d to be stable (a transaction is open): %w", topic, part, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}
