package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/walletsync/walletsync/internal/backoff"
)

// ReadPartition calls fn for every committed record of one partition from
// offset from (negative: the start of the log) up to the partition's last
// stable offset as it is when the call starts. It is how processors rebuild
// a partition's state, after WaitStable: only once no transaction is open is
// everything a previous owner committed below that offset.
//
// The loop ends on the fetch position, not on the offset of the last record
// it saw: offsets below the stable offset may hold nothing a read_committed
// reader is given (an aborted transaction's batches, and no marker after
// them when a broker ended that transaction on recovery, as kfake does for
// the transactions a crash left open). A reader that waits to see a record
// at end-1 then waits for ever. So it fetches by hand and takes the next
// offset from kgo.ProcessFetchPartition, which steps over aborted batches
// as the client's own consumer does.
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
	cl, err := kgo.NewClient(ClientOpts(brokers, "walletsync-restore")...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	r := &partitionReader{cl: cl, adm: kadm.NewClient(cl), topic: topic, part: part, dec: kgo.DefaultDecompressor()}
	n := 0
	next := from
	for next < end.Offset {
		recs, after, err := r.fetch(ctx, next)
		if err != nil {
			return n, err
		}
		for _, rec := range recs {
			if rec.Offset >= end.Offset {
				break
			}
			n++
			fn(rec)
		}
		next = after
	}
	return n, nil
}

// partitionReader fetches one partition with Fetch requests of its own.
type partitionReader struct {
	cl    *kgo.Client
	adm   *kadm.Client
	topic string
	part  int32
	dec   kgo.Decompressor

	leader  int32 // -1: look it up
	topicID [16]byte
	known   bool
}

// fetch returns the committed records from offset at on and the offset to
// fetch next. Retriable errors (leader moves, a broker restarting) are
// retried with a growing pause, a bounded number of times.
func (r *partitionReader) fetch(ctx context.Context, at int64) ([]*kgo.Record, int64, error) {
	retry, retries := backoff.Policy{Base: 50 * time.Millisecond, Max: time.Second}, 0
	stalls := 0
	maxBytes := int32(16 << 20)
	for attempt := 0; ; attempt++ {
		recs, next, err := r.fetchOnce(ctx, at, maxBytes)
		switch {
		case err == nil && next > at:
			return recs, next, nil
		case err == nil:
			// Nothing decoded and no step: the first batch is larger
			// than asked for (truncated). Ask for more.
			stalls++
			if stalls > 6 {
				return nil, at, fmt.Errorf("reading %s/%d: no progress at offset %d", r.topic, r.part, at)
			}
			maxBytes = min(2*maxBytes, 1<<30)
			continue
		case ctx.Err() != nil:
			return nil, at, ctx.Err()
		case attempt >= 8 || !retriable(err):
			return nil, at, fmt.Errorf("reading %s/%d at offset %d: %w", r.topic, r.part, at, err)
		}
		r.known = false // the leader may have moved
		if retries++; backoff.Wait(ctx, retry.Delay(retries)) != nil {
			return nil, at, ctx.Err()
		}
	}
}

func retriable(err error) bool {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Retriable
	}
	return true // a network error: the broker may be back in a moment
}

func (r *partitionReader) fetchOnce(ctx context.Context, at int64, maxBytes int32) ([]*kgo.Record, int64, error) {
	if !r.known {
		md, err := r.adm.Metadata(ctx, r.topic)
		if err != nil {
			return nil, at, err
		}
		td, ok := md.Topics[r.topic]
		if !ok || td.Err != nil {
			return nil, at, fmt.Errorf("metadata of %s: %v", r.topic, td.Err)
		}
		pd, ok := td.Partitions[r.part]
		if !ok || pd.Err != nil || pd.Leader < 0 {
			return nil, at, fmt.Errorf("no leader for %s/%d: %v", r.topic, r.part, pd.Err)
		}
		r.leader, r.topicID, r.known = pd.Leader, td.ID, true
	}
	p, err := fetchPartition(ctx, r.cl, r.leader, r.topic, r.topicID, r.part, at, maxBytes, true)
	if err != nil {
		return nil, at, err
	}
	fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
		Offset: at, IsolationLevel: kgo.ReadCommitted(), Topic: r.topic, Partition: r.part,
	}, p, r.dec, nil)
	if fp.Err != nil {
		return nil, at, fp.Err
	}
	return fp.Records, next, nil
}

// fetchPartition sends one Fetch request for one partition to its leader,
// outside any fetch session, and returns that partition's answer.
// committed asks for read_committed (the aborted transactions are listed);
// otherwise the batches come as they are on the log.
func fetchPartition(ctx context.Context, cl *kgo.Client, leader int32, topic string, topicID [16]byte, part int32, at int64, maxBytes int32, committed bool) (*kmsg.FetchResponseTopicPartition, error) {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 500, 1, maxBytes
	if committed {
		req.IsolationLevel = 1
	}
	req.SessionID, req.SessionEpoch = 0, -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, topicID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = part, at, maxBytes
	rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	kresp, err := cl.Broker(int(leader)).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, err
	}
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			if p := &resp.Topics[i].Partitions[j]; p.Partition == part {
				return p, nil
			}
		}
	}
	return nil, fmt.Errorf("fetch response without %s/%d", topic, part)
}

// WaitStable waits until no transaction is open on one partition (its last
// stable offset has reached its high watermark) and returns how long that
// took. A transaction left open by an expelled or dead writer holds the
// stable offset back until the broker aborts it, and what others committed
// after it stays invisible meanwhile: a reader that stopped at that offset
// would see an old view of the partition as if it were the latest.
func WaitStable(ctx context.Context, adm *kadm.Client, topic string, part int32) (time.Duration, error) {
	start := time.Now()
	retry := backoff.Policy{Base: 20 * time.Millisecond, Max: 500 * time.Millisecond}
	for attempt := 1; ; attempt++ {
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
		if backoff.Wait(ctx, retry.Delay(attempt)) != nil {
			if err != nil {
				return time.Since(start), fmt.Errorf("waiting for %s/%d to be stable: %w (last: %v)", topic, part, ctx.Err(), err)
			}
			return time.Since(start), fmt.Errorf("waiting for %s/%d to be stable (a transaction is open): %w", topic, part, ctx.Err())
		}
	}
}

// LogFetchErrors logs a poll's fetch errors as msg, leaving out the ends of
// the poll's own context (its deadline is how a consume loop wakes up to
// flush or roll, not a failure). franz-go retries fetch errors itself; a
// sink's consume loop only reports them.
func LogFetchErrors(fs kgo.Fetches, log *slog.Logger, msg string) {
	fs.EachError(func(topic string, p int32, err error) {
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			log.Warn(msg, "topic", topic, "partition", p, "err", err)
		}
	})
}
