package processors_test

import (
	"context"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/processors"
	"github.com/walletsync/walletsync/wire"
)

const benchPartitions = 6

// copyTopics are where the copying loops write: copy k of a record goes to
// topic k, as the processor's outputs go to topics of their own. Copies in
// one topic would sit side by side in one batch, which the producer's
// compression all but removes, and the floor would be too low.
var copyTopics = [...]string{"bench.copy.0", "bench.copy.1", "bench.copy.2"}

// benchCluster starts a broker with the pipeline's topics and n synthetic
// events already on wallet.events.
func benchCluster(b *testing.B, n int) (*kafka.Embedded, *kgo.Client, *kadm.Client) {
	b.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		b.Fatal(err)
	}
	cl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "bench")...)
	if err != nil {
		b.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, adm, kafka.DefaultTopics(), kafka.Layout{Partitions: benchPartitions, Replication: 1}); err != nil {
		b.Fatal(err)
	}
	if err := kadmOK(adm.CreateTopics(ctx, benchPartitions, 1, nil, copyTopics[:]...)); err != nil {
		b.Fatal(err)
	}
	evs := synth.Events(synth.Default(n))
	recs := make([]*kgo.Record, 0, 10_000)
	for i := range evs {
		recs = append(recs, &kgo.Record{Topic: "wallet.events", Key: []byte(evs[i].CustomerID), Value: wire.AppendEvent(nil, &evs[i])})
		if len(recs) == cap(recs) || i == len(evs)-1 {
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	return emb, cl, adm
}

// plainCopy is the baseline: the simplest franz-go consume→produce loop
// over the same records, without dedupe, fold or transactions, writing
// copies of each record (1 for the baseline; 3, what writing more
// costs without transactions, to tell I/O from work).
func plainCopy(b *testing.B, brokers []string, n, copies int) {
	cl, err := kgo.NewClient(append(kafka.ClientOpts(brokers, "copy"),
		kgo.ConsumeTopics("wallet.events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	seen := 0
	for seen < n {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			seen++
			for k := range copies {
				cl.Produce(ctx, &kgo.Record{Topic: copyTopics[k], Key: r.Key, Value: r.Value}, nil)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// txnCopy is the floor under any exactly-once processor of these events: a
// GroupTransactSession loop like the processor's (a transaction per poll,
// outputs and offsets committed together) that writes each record to
// `copies` outputs unchanged, and with parse, also decodes and validates it
// first, the least a processor that checks the contract must do. Two
// copies are the processor's output volume: the clean record, and a status
// record of about the same size for almost every event (0.96 here), each
// in a topic of its own.
func txnCopy(b *testing.B, brokers []string, adm *kadm.Client, n, copies int, parse bool) {
	ctx := context.Background()
	group := "bench-txn-copy"
	sess, err := kgo.NewGroupTransactSession(append(kafka.ClientOpts(brokers, "txn-copy"),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics("wallet.events"), kgo.TransactionalID("txn-copy"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.ProducerLinger(0))...)
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	decs := map[int32]*wire.Decoder{}
	committed := 0
	for committed < n {
		fs := sess.PollRecords(ctx, 20_000)
		if fs.NumRecords() == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			b.Fatal(err)
		}
		// Partitions in parallel, as the processor does them.
		var wg sync.WaitGroup
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			dec := decs[fp.Partition]
			if dec == nil {
				dec = new(wire.Decoder)
				decs[fp.Partition] = dec
			}
			wg.Go(func() {
				for _, r := range fp.Records {
					if parse {
						if _, _, err := dec.ParseLean(r.Value); err != nil {
							panic(err)
						}
					}
					for k := range copies {
						sess.Produce(ctx, &kgo.Record{Topic: copyTopics[k], Partition: r.Partition, Key: r.Key, Value: r.Value}, nil)
					}
				}
			})
		})
		wg.Wait()
		ok, err := sess.End(ctx, kgo.TryCommit)
		if err != nil {
			b.Fatal(err)
		}
		if ok {
			committed += fs.NumRecords()
		}
	}
}

// runProcessor runs one walletsync processor until its group has committed
// every record of wallet.events.
func runProcessor(b *testing.B, brokers []string, adm *kadm.Client, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := processors.New(processors.Config{Brokers: brokers, TransactionalID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	for {
		offs, err := adm.FetchOffsetsForTopics(kadm.RequireStable(ctx), processors.DefaultGroup, "wallet.events")
		if err == nil {
			var sum int64
			offs.Each(func(o kadm.OffsetResponse) { sum += max(o.At, 0) })
			if sum >= int64(n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
}

// BenchmarkPipeline: events/s of the exactly-once processor against the
// plain consume→produce loop over the same 200k records on the same kind of
// in-process broker (goal: ≥ 0.5 of it and ≥ 200,000 events/s). The
// transactional rows are floors: what the processor's loop costs with no
// work, and with only the decoding every processor must do.
func BenchmarkPipeline(b *testing.B) {
	const n = 200_000
	for _, c := range []struct {
		name string
		run  func(*testing.B, []string, *kadm.Client)
	}{
		{"plain_consume_produce_baseline", func(b *testing.B, br []string, _ *kadm.Client) { plainCopy(b, br, n, 1) }},
		{"plain_consume_produce_3_outputs", func(b *testing.B, br []string, _ *kadm.Client) { plainCopy(b, br, n, 3) }},
		{"transactional_copy", func(b *testing.B, br []string, adm *kadm.Client) { txnCopy(b, br, adm, n, 1, false) }},
		{"transactional_copy_2_outputs", func(b *testing.B, br []string, adm *kadm.Client) { txnCopy(b, br, adm, n, 2, false) }},
		{"transactional_parse_copy", func(b *testing.B, br []string, adm *kadm.Client) { txnCopy(b, br, adm, n, 1, true) }},
		{"transactional_parse_copy_2_outputs", func(b *testing.B, br []string, adm *kadm.Client) { txnCopy(b, br, adm, n, 2, true) }},
		{"walletsync_processor", func(b *testing.B, br []string, adm *kadm.Client) { runProcessor(b, br, adm, n) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			var total, cpu time.Duration
			cpuKnown := true
			for b.Loop() {
				b.StopTimer()
				emb, cl, adm := benchCluster(b, n)
				b.StartTimer()
				start := time.Now()
				cpu0, ok0 := processCPU()
				c.run(b, emb.Brokers(), adm)
				cpu1, ok1 := processCPU()
				total += time.Since(start)
				cpu += cpu1 - cpu0
				cpuKnown = cpuKnown && ok0 && ok1
				b.StopTimer()
				cl.Close()
				emb.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "events/s")
			if cpuKnown {
				// The whole process's CPU, the broker's included. Every
				// row keeps the cores about equally busy (1.7–1.8 of 2),
				// so the events/s of two rows stand in the inverse ratio
				// of this, whatever the code's parallelism.
				b.ReportMetric(cpu.Seconds()*1e6/(float64(n)*float64(b.N)), "cpu-µs/event")
			}
		})
	}
}

// BenchmarkRestartRecovery: rebuilding the state of 1M customers from
// wallet.state, plus the replay of a full checkpoint interval (50,000 clean
// events a partition), all partitions at once as after a restart (goal
// < 5 s), and the heap the rebuilt state takes per customer.
func BenchmarkRestartRecovery(b *testing.B) {
	const customers = 1_000_000
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Close()
	cl, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "bench"), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	topics := kafka.DefaultTopics()
	if err := kafka.EnsureTopics(ctx, adm, topics, kafka.Layout{Partitions: benchPartitions, Replication: 1}); err != nil {
		b.Fatal(err)
	}
	f := walletsync.NewFold()
	recs := make([]*kgo.Record, 0, 10_000)
	for i := range customers {
		id := "cust-" + strconv.Itoa(1_000_000+i)
		e := walletsync.Event{ID: "evt-" + strconv.Itoa(i), Type: walletsync.TypeInstalled, Platform: walletsync.Platform(1 + i%2),
			CustomerID: id, PassID: "pass-" + strconv.Itoa(i), OccurredAt: walletsync.MinTime + int64(i)}
		st, _ := f.Apply(&e)
		recs = append(recs, &kgo.Record{Topic: topics.State, Partition: int32(i % benchPartitions), Key: []byte(id),
			Value: wire.AppendStateRecord(nil, &st, f.Registers(id))})
		if len(recs) == cap(recs) || i == customers-1 {
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	// The worst replay a crash leaves: a checkpoint marker at the start of
	// each clean partition, then a full CheckpointEvents of events on it.
	const replay = 50_000
	for part := range int32(benchPartitions) {
		recs = append(recs, &kgo.Record{Topic: topics.State, Partition: part, Key: []byte(wire.CheckpointKey), Value: []byte(`{"cleanOffset":0}`)})
	}
	for i := range replay * benchPartitions {
		c := i % customers
		id := "cust-" + strconv.Itoa(1_000_000+c)
		e := walletsync.Event{ID: "replay-" + strconv.Itoa(i), Type: walletsync.TypeUninstalled, Platform: walletsync.Platform(1 + c%2),
			CustomerID: id, PassID: "pass-" + strconv.Itoa(c), OccurredAt: walletsync.MinTime + int64(customers+i)}
		k := walletsync.KeyOf(e.ID)
		recs = append(recs, &kgo.Record{Topic: topics.Clean, Partition: int32(c % benchPartitions), Key: []byte(id), Value: wire.AppendEvent(nil, &e),
			Headers: []kgo.RecordHeader{{Key: kafka.HeaderIDKey, Value: k[:]}}})
		if len(recs) >= 10_000 || i == replay*benchPartitions-1 {
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	f = nil
	var perCustomer float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		states, total := processors.LoadAll(ctx, emb.Brokers(), adm, topics, benchPartitions)
		if total != customers {
			b.Fatalf("loaded %d customers, want %d", total, customers)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		perCustomer = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / customers
		runtime.KeepAlive(states)
		b.StartTimer()
	}
	b.ReportMetric(perCustomer, "heap-bytes/customer")
}

// kadmOK is the first error of a topic creation, its own or a topic's.
func kadmOK(rs kadm.CreateTopicResponses, err error) error {
	if err != nil {
		return err
	}
	return rs.Error()
}

// BenchmarkResolveAfterPage measures how soon the events waiting for their
// pass's customer are folded once a backfill page names them: 1,000 passes
// with three waiting events each, then one page of their 1,000 holders (as
// the backfill writes it) per iteration; the time is from the page's
// acknowledgement until every one of its 3,000 events is on
// wallet.events.clean, with the processors and the resolver running.
func BenchmarkResolveAfterPage(b *testing.B) {
	const passesPerPage, perPass = 1000, 3
	emb, cl, adm := benchCluster(b, 0)
	defer emb.Close()
	defer cl.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := processors.New(processors.Config{Brokers: emb.Brokers(), TransactionalID: "bench-process"})
	if err != nil {
		b.Fatal(err)
	}
	r, err := processors.NewResolver(processors.ResolverConfig{Brokers: emb.Brokers(), TransactionalID: "bench-resolve"})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	go func() { defer wg.Done(); _ = r.Run(ctx) }()
	defer wg.Wait()
	defer cancel()
	t := kafka.DefaultTopics()
	cleanTotal := func() int64 {
		ends, err := adm.ListCommittedOffsets(ctx, t.Clean)
		if err != nil {
			return -1
		}
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
		return n
	}
	var latencies []float64
	round := 0
	for b.Loop() {
		b.StopTimer()
		var recs []*kgo.Record
		for i := range passesPerPage {
			pass := "pass-" + strconv.Itoa(round) + "-" + strconv.Itoa(i)
			for k := range perPass {
				e := walletsync.Event{ID: pass + "-" + strconv.Itoa(k), Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple,
					PassID: pass, OccurredAt: 1_772_000_000_000 + int64(k), Source: "webhook"}
				recs = append(recs, &kgo.Record{Topic: t.Passes, Key: wire.WaitingKey(pass, e.ID), Value: wire.AppendWaiting(nil, &e)})
			}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		// Let the resolver take them in before the page arrives.
		time.Sleep(500 * time.Millisecond)
		base := cleanTotal()
		var page []*kgo.Record
		for i := range passesPerPage {
			pass := "pass-" + strconv.Itoa(round) + "-" + strconv.Itoa(i)
			h := wire.Holder{PassID: pass, CustomerID: "cust-" + pass, At: time.Now().UnixMilli(), Source: "backfill"}
			page = append(page, &kgo.Record{Topic: t.Passes, Key: wire.HolderKey(pass), Value: wire.AppendHolder(nil, &h)})
		}
		b.StartTimer()
		start := time.Now()
		if err := cl.ProduceSync(ctx, page...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		// Each resolved event makes one clean record, and the first event
		// of a pass a holder record too, which the clean topic does not see.
		for cleanTotal() < base+passesPerPage*perPass {
			if time.Since(start) > time.Minute {
				b.Fatal("the page's events were not folded within a minute")
			}
			time.Sleep(2 * time.Millisecond)
		}
		latencies = append(latencies, time.Since(start).Seconds())
		round++
	}
	sort.Float64s(latencies)
	b.ReportMetric(latencies[len(latencies)/2]*1000, "ms/page-median")
	b.ReportMetric(float64(passesPerPage*perPass)/latencies[len(latencies)/2], "events/s")
}
