package ingest

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
)

// KafkaPublisher writes canonical events to wallet.events, keyed by
// customerId. Its client is idempotent with acks from all in-sync replicas
// (franz-go's defaults, kept on purpose), so a retried produce never
// duplicates a record and an acknowledged one is durable.
type KafkaPublisher struct {
	cl    *kgo.Client
	topic string
}

// NewKafkaPublisher publishes to topic through cl. The client should be made
// with a record delivery timeout, so that a broker outage answers the HTTP
// caller with 503 in bounded time rather than holding it.
func NewKafkaPublisher(cl *kgo.Client, topic string) *KafkaPublisher {
	return &KafkaPublisher{cl: cl, topic: topic}
}

// ProducerOpts are the client options ingest needs on top of the shared ones.
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
	recs := make([]*kgo.Record, len(evs))
	now := time.Now()
	for i := range evs {
		recs[i] = &kgo.Record{Topic: p.topic, Key: []byte(evs[i].CustomerID), Value: evs[i].AppendJSON(nil), Timestamp: now}
	}
	res := p.cl.ProduceSync(ctx, recs...)
	errs := make([]error, len(evs))
	for i, r := range res {
		errs[i] = r.Err
	}
	return errs
}
