package processors_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/processors"
	"github.com/walletsync/walletsync/wire"
)

// A previous owner of a partition that was expelled while it still ran (or
// died without a successor under its transactional id) can leave a
// transaction open on wallet.state. Until the broker aborts it, the last
// stable offset stays behind it, and everything committed after it is
// invisible to a read-committed reader. A member that rebuilt its state from
// such a view restored an old version and emitted versions again. The state
// must be loaded only once no transaction of someone else is open.
func TestStateLoadWaitsOutAnotherOwnersOpenTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a transaction timeout; skipped with -short")
	}
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	brokers := emb.Brokers()
	ctx := context.Background()
	cl, err := kgo.NewClient(append(kafka.ClientOpts(brokers, "zombie-test"), kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics := kafka.DefaultTopics()
	if err := kafka.EnsureTopics(ctx, adm, topics, kafka.Layout{Partitions: 1, Replication: 1}); err != nil {
		t.Fatal(err)
	}

	// The zombie: a transaction with a state record, never ended; the
	// broker aborts it after its timeout.
	const zombieTimeout = 3 * time.Second
	zombie, err := kgo.NewClient(append(kafka.ClientOpts(brokers, "zombie"),
		kgo.TransactionalID("expelled-member"), kgo.TransactionTimeout(zombieTimeout),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Close()
	if err := zombie.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	stale := walletsync.Status{CustomerID: "c1", Version: 7}
	if err := zombie.ProduceSync(ctx, &kgo.Record{Topic: topics.State, Partition: 0, Key: []byte("c1"),
		Value: wire.AppendStateRecord(nil, &stale, nil)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	zombieOpened := time.Now()

	send := func(id, typ, platform, at string) {
		t.Helper()
		ev := fmt.Sprintf(`{"eventId":%q,"customerId":"c1","passId":"p1","platform":%q,"type":%q,"occurredAt":%q}`, id, platform, typ, at)
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topics.Events, Key: []byte("c1"), Value: []byte(ev)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// runUntilCaughtUp runs one processor until the group has consumed
	// every event, then stops it: the next one must load state again.
	runUntilCaughtUp := func(name string) {
		t.Helper()
		p, err := processors.New(processors.Config{Brokers: brokers, Topics: topics, TransactionalID: name})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(rctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			ends, err1 := adm.ListEndOffsets(ctx, topics.Events)
			offs, err2 := adm.FetchOffsets(ctx, processors.DefaultGroup)
			if err1 == nil && err2 == nil {
				end, _ := ends.Lookup(topics.Events, 0)
				if o, ok := offs.Lookup(topics.Events, 0); ok && o.At == end.Offset {
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s never caught up", name)
	}

	send("e1", "installed", "apple", "2026-01-01T10:00:00Z")
	send("e2", "uninstalled", "apple", "2026-01-01T11:00:00Z")
	runUntilCaughtUp("first")
	if time.Since(zombieOpened) < zombieTimeout {
		t.Errorf("the first processor finished %v after the open transaction began, before the broker could abort it: it did not wait", time.Since(zombieOpened))
	}
	send("e3", "installed", "google", "2026-01-01T12:00:00Z")
	runUntilCaughtUp("second")

	var versions []uint64
	readErr := fmt.Errorf("not read")
	// A client that never wrote to a topic may be told it does not exist
	// for a moment (metadata); retried.
	for try := 0; readErr != nil && try < 50; try++ {
		versions = nil
		_, readErr = kafka.ReadPartition(ctx, brokers, adm, topics.Status, 0, -1, func(r *kgo.Record) {
			st, err := wire.ParseStatus(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			versions = append(versions, st.Version)
		})
		if readErr != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if readErr != nil {
		t.Fatal(readErr)
	}
	if fmt.Sprint(versions) != "[1 2 3]" {
		t.Fatalf("status versions %v, want [1 2 3]", versions)
	}
}
