package kafka

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadPartition calls fn for every committed record of one partition from
// offset from (negative: the start of the log) up to the partition's last
// stable offset as it is when the call starts. It is how processors rebuild
// a partition's state: everything a previous owner committed is below that
// offset once this member owns the partition.
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
