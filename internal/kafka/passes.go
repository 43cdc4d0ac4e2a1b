package kafka

import (
	"bytes"
	"hash/fnv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// PassesTopic is the default name of Topics.Passes, which PassPartitioner
// recognises.
const PassesTopic = "wallet.passes"

// PassPartitioner partitions wallet.passes by pass and leaves every other
// topic to inner. The topic holds two kinds of record of one pass, its
// holder (key: the passId) and its waiting events (key: passId, a NUL
// byte, eventId), and a pass's records must share a partition so that the
// resolver owning it sees them all, in order: the partition is a hash of
// the key up to its first NUL byte. A custom partitioner rather than the
// key hash of Kafka clients, because no standard partitioner hashes part
// of a key; every walletsync client that writes the topic uses this one.
func PassPartitioner(inner kgo.Partitioner) kgo.Partitioner {
	return passPartitioner{inner}
}

type passPartitioner struct{ inner kgo.Partitioner }

func (p passPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == PassesTopic {
		return passTopic{}
	}
	return p.inner.ForTopic(topic)
}

type passTopic struct{}

func (passTopic) RequiresConsistency(*kgo.Record) bool { return true }
func (passTopic) Partition(r *kgo.Record, n int) int   { return int(PassPartition(r.Key, int32(n))) }

// PassPartition is the partition of wallet.passes, among n, that holds the
// records of the pass a key names.
func PassPartition(key []byte, n int32) int32 {
	if i := bytes.IndexByte(key, 0); i >= 0 {
		key = key[:i]
	}
	h := fnv.New32a()
	_, _ = h.Write(key)
	return int32(h.Sum32() % uint32(n))
}
