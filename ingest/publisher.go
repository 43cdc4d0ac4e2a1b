package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// KafkaPublisher writes canonical events to wallet.events, keyed by
// customerId, and those that name no customer to wallet.passes, by pass. Its client is idempotent with acks from all in-sync replicas
// (franz-go's defaults, kept on purpose), so a retried produce never
// duplicates a record and an acknowledged one is durable.
type KafkaPublisher struct {
	cl      *kgo.Client
	topic   string
	passes  string // where events that name no customer wait for their pass's
	timeout time.Duration

	mu               sync.Mutex
	lastOK, lastFail time.Time
	failErr          error
}

// failingFor is how long a failed publish keeps Err non-nil when nothing
// has succeeded since. It must end by itself: a process that reports "not
// ready" gets no traffic, so no success could ever clear it.
const failingFor = 10 * time.Second

// Err is the error of the last publish when it failed within the last 10 s
// and none has succeeded since (Kafka refusing writes: a full disk, lost
// replicas), else nil. Readiness reports it.
func (p *KafkaPublisher) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failErr == nil || p.lastOK.After(p.lastFail) || time.Since(p.lastFail) > failingFor {
		return nil
	}
	return fmt.Errorf("the last write to %s failed %s ago: %w", p.topic, time.Since(p.lastFail).Round(time.Millisecond), p.failErr)
}

func (p *KafkaPublisher) note(errs []error) {
	var failed error
	for _, err := range errs {
		if err != nil {
			failed = err
			break
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if failed != nil {
		p.lastFail, p.failErr = time.Now(), failed
	} else {
		p.lastOK = time.Now()
	}
}

// ErrUnconfirmed is the error of an event Kafka had not acknowledged when the
// publish deadline passed: it may or may not be written. Retrying is safe,
// since a written event's retry is dropped as a duplicate by eventId.
var ErrUnconfirmed = errors.New("not acknowledged by Kafka in time")

// NewKafkaPublisher publishes to topic through cl, answering within timeout.
func NewKafkaPublisher(cl *kgo.Client, topic string, timeout time.Duration) *KafkaPublisher {
	return &KafkaPublisher{cl: cl, topic: topic, passes: kafka.PassesTopic, timeout: timeout}
}

// ProducerOpts are the client options ingest needs on top of the shared ones.
// The delivery timeout fails records that never reached a broker; the
// publisher's own deadline covers those whose request was in flight, which
// franz-go keeps retrying to keep idempotent sequence numbers valid.
func ProducerOpts(deliveryTimeout time.Duration) []kgo.Opt {
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(deliveryTimeout),
		kgo.ProducerLinger(0),
	}
}

// Publish writes the events in order and returns one error per event (nil
// when Kafka acknowledged it). Records of one customer share a partition and
// keep their order.
func (p *KafkaPublisher) Publish(ctx context.Context, evs []walletsync.Event) []error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var (
		mu      sync.Mutex
		errs    = make([]error, len(evs))
		pending = len(evs)
		done    = make(chan struct{})
	)
	for i := range errs {
		errs[i] = ErrUnconfirmed
	}
	now := time.Now()
	for i := range evs {
		rec := &kgo.Record{Topic: p.topic, Key: []byte(evs[i].CustomerID), Value: wire.AppendEvent(nil, &evs[i]), Timestamp: now}
		if evs[i].CustomerID == "" {
			// It waits on wallet.passes for its pass's customer (SPEC §6);
			// the record's timestamp is when its wait began.
			rec = &kgo.Record{Topic: p.passes, Key: wire.WaitingKey(evs[i].PassID, evs[i].ID), Value: wire.AppendWaiting(nil, &evs[i]), Timestamp: now}
		}
		// With the deadline in its context, franz-go fails the record
		// when the deadline passes, wherever that is safe for idempotent
		// sequencing (not written, or answered); only a record whose
		// request is truly in flight stays unconfirmed.
		p.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if ctx.Err() == nil {
				errs[i] = err
			}
			if pending--; pending == 0 {
				close(done)
			}
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	mu.Lock()
	out := slices.Clone(errs)
	mu.Unlock()
	p.note(out)
	return out
}
