package parquet_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/sinks/parquet"
	"github.com/walletsync/walletsync/wire"
)

type fixture struct {
	t      *testing.T
	emb    *kafka.Embedded
	txn    *kgo.Client
	adm    *kadm.Client
	topics kafka.Topics
	fold   *walletsync.Fold
	sent   map[string][]byte // eventId → canonical bytes
	status map[string]walletsync.Status
}

func newFixture(t *testing.T) *fixture {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "archive-test")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	txn, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "archive-test-txn"), kgo.TransactionalID("archive-test"), kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(txn.Close)
	f := &fixture{t: t, emb: emb, txn: txn, adm: kadm.NewClient(cl), topics: kafka.DefaultTopics(), fold: walletsync.NewFold(),
		sent: map[string][]byte{}, status: map[string]walletsync.Status{}}
	if err := kafka.EnsureTopics(context.Background(), f.adm, f.topics, kafka.Layout{Partitions: 3, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	return f
}

// write sends events to the clean topic and their status changes to
// wallet.status, in transactions, as processors do.
func (f *fixture) write(evs []walletsync.Event) {
	ctx := context.Background()
	for i := 0; i < len(evs); i += 250 {
		if err := f.txn.BeginTransaction(); err != nil {
			f.t.Fatal(err)
		}
		var recs []*kgo.Record
		for _, e := range evs[i:min(i+250, len(evs))] {
			b := wire.AppendEvent(nil, &e)
			f.sent[e.ID] = b
			recs = append(recs, &kgo.Record{Topic: f.topics.Clean, Key: []byte(e.CustomerID), Value: b})
			if st, changed := f.fold.Apply(&e); changed {
				f.status[st.CustomerID] = st
				recs = append(recs, &kgo.Record{Topic: f.topics.Status, Key: []byte(st.CustomerID), Value: wire.AppendStateRecord(nil, &st, f.fold.Registers(st.CustomerID))})
			}
		}
		if err := f.txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			f.t.Fatal(err)
		}
		if err := f.txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) run(dir string) (stop func()) {
	a, err := parquet.New(parquet.Config{Brokers: f.emb.Brokers(), Dir: dir, RollInterval: 150 * time.Millisecond})
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				f.t.Errorf("archiver: %v", err)
			}
		}
	}
	f.t.Cleanup(stop)
	return stop
}

// waitArchived: the archiver's group has reached the end of both topics.
func (f *fixture) waitArchived() {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ends, err1 := f.adm.ListEndOffsets(context.Background(), f.topics.Clean, f.topics.Status)
		offs, err2 := f.adm.FetchOffsets(context.Background(), parquet.DefaultGroup)
		ok := err1 == nil && err2 == nil
		if ok {
			ends.Each(func(o kadm.ListedOffset) {
				c, found := offs.Lookup(o.Topic, o.Partition)
				if o.Err != nil || o.Offset > 0 && (!found || c.At < o.Offset) {
					ok = false
				}
			})
		}
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatal("the archiver did not reach the end of the topics")
}

// check: the archive holds every sent event once, byte-identical once
// turned back into an event, and the newest status of every customer.
func (f *fixture) check(dir string) {
	f.t.Helper()
	seen := map[string]int{}
	err := parquet.ReadDataset(dir, parquet.EventsDataset, "", "", func(rows []parquet.EventRow) error {
		for i := range rows {
			e := rows[i].Event()
			seen[e.ID]++
			if string(wire.AppendEvent(nil, &e)) != string(f.sent[e.ID]) {
				f.t.Errorf("event %s archived as %s, sent as %s", e.ID, wire.AppendEvent(nil, &e), f.sent[e.ID])
			}
			if parquet.Day(e.OccurredAt) == "" {
				f.t.Fatal("no day")
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	// The columnar scan that replays use reads the same events.
	scanned := 0
	if err := parquet.ScanEvents(dir, "", "", func(evs []walletsync.Event) error {
		for i := range evs {
			scanned++
			if b := wire.AppendEvent(nil, &evs[i]); string(b) != string(f.sent[evs[i].ID]) {
				f.t.Errorf("scanned event %s as %s, sent as %s", evs[i].ID, b, f.sent[evs[i].ID])
			}
		}
		return nil
	}); err != nil {
		f.t.Fatal(err)
	}
	if scanned != len(f.sent) {
		f.t.Errorf("scanned %d events, sent %d", scanned, len(f.sent))
	}
	for id := range f.sent {
		if seen[id] != 1 {
			f.t.Errorf("event %s archived %d times", id, seen[id])
		}
	}
	if len(seen) != len(f.sent) {
		f.t.Errorf("%d events archived, %d sent", len(seen), len(f.sent))
	}
	latest := map[string]parquet.StatusRow{}
	versions := map[string]int{}
	err = parquet.ReadDataset(dir, parquet.StatusDataset, "", "", func(rows []parquet.StatusRow) error {
		for _, r := range rows {
			versions[r.CustomerID]++
			if r.Version > latest[r.CustomerID].Version {
				latest[r.CustomerID] = r
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	for id, st := range f.status {
		if got := latest[id]; got.Version != int64(st.Version) || got.WalletStatus != st.Wallet.String() || versions[id] != int(st.Version) {
			f.t.Errorf("customer %s: archived %+v (%d versions), want version %d %s", id, got, versions[id], st.Version, st.Wallet)
		}
	}
}

// stream: n events of 300 customers, spread over four days.
func stream(n int, seed uint64) []walletsync.Event {
	cfg := synth.Default(n)
	cfg.Customers, cfg.Seed, cfg.DupRate = 300, seed, 0
	cfg.Lifecycle = true // issued events (no platform) and device removals are archived too
	evs := synth.Events(cfg)
	for i := range evs {
		evs[i].OccurredAt += int64(i%4) * 86_400_000
		switch i % 7 {
		case 1: // several tags, counts
			evs[i].Registration = &walletsync.Registration{Medium: "sms", Tags: []string{"a", "b", "c"}, ActiveCount: 2, HasActiveCount: true, TotalCount: 5, HasTotalCount: true}
		case 2: // a registration without tags
			evs[i].Registration = &walletsync.Registration{Origin: "qr"}
		}
	}
	return evs
}

func TestArchiveHoldsEveryRecordOnce(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	f.run(dir)
	f.write(stream(3000, 1))
	f.waitArchived()
	f.check(dir)
	days, err := os.ReadDir(filepath.Join(dir, parquet.EventsDataset))
	if err != nil || len(days) != 4 {
		t.Fatalf("events are not partitioned by day: %v %v", days, err)
	}
}

// Stopped and started again three times while records flow, and once left
// as a crash leaves it (a range with one of its two files, a temp file):
// still every record once.
func TestArchiveRestartsNeverDuplicateOrSkip(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	evs := stream(6000, 2)
	for round := range 3 {
		stop := f.run(dir)
		f.write(evs[round*1500 : (round+1)*1500])
		time.Sleep(time.Duration(100+80*round) * time.Millisecond)
		stop()
	}
	// What a crash between writing and renaming leaves behind.
	crashDay := filepath.Join(dir, parquet.EventsDataset, "day=2026-01-01")
	if err := os.MkdirAll(crashDay, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"p0-999000-999999-1of2.parquet", ".tmp-p1-5-9-1of1.parquet"} {
		if err := os.WriteFile(filepath.Join(crashDay, name), []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.write(evs[4500:])
	f.run(dir)
	f.waitArchived()
	f.check(dir)
	for _, name := range []string{"p0-999000-999999-1of2.parquet", ".tmp-p1-5-9-1of1.parquet"} {
		if _, err := os.Stat(filepath.Join(crashDay, name)); !os.IsNotExist(err) {
			t.Errorf("%s was not cleaned up: %v", name, err)
		}
	}
}

// Defect (issue 15): a crash between a roll's files and its commit left the
// group behind the files. The archiver resumed after the files, and a
// partition that got nothing new never committed: /v1/pipeline reported
// lag for ever although the archive was complete.
func TestArchiveCommitsWhereItsFilesEnd(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	stop := f.run(dir)
	f.write(stream(1500, 3))
	f.waitArchived()
	stop()
	// The crash: files written, the group's commit lost.
	back := kadm.Offsets{}
	for _, topic := range []string{f.topics.Clean, f.topics.Status} {
		for p := range int32(3) {
			back.Add(kadm.Offset{Topic: topic, Partition: p, At: 0, LeaderEpoch: -1})
		}
	}
	if err := f.adm.CommitAllOffsets(context.Background(), parquet.DefaultGroup, back); err != nil {
		t.Fatal(err)
	}
	f.run(dir)
	f.waitArchived() // nothing new is written: only the start can commit
	f.check(dir)
}

// Defect (issue 15): a roll that failed (the disk full) ended the archiver,
// and with it `walletsync run`. It now retries the same records, reports
// why in Err, and writes them once the directory takes files again.
func TestArchiveWaitsOutAFailingDisk(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	// No day of the events can be written: a file stands where each day's
	// directory goes, as good as a disk that refuses every write.
	evs := stream(900, 4)
	var blockers []string
	for _, e := range evs {
		b := filepath.Join(dir, parquet.EventsDataset, "day="+parquet.Day(e.OccurredAt))
		if _, err := os.Stat(b); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(b), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(b, []byte("in the way"), 0o644); err != nil {
			t.Fatal(err)
		}
		blockers = append(blockers, b)
	}
	a, err := parquet.New(parquet.Config{Brokers: f.emb.Brokers(), Dir: dir, RollInterval: 100 * time.Millisecond, RetryEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	f.write(evs)
	deadline := time.Now().Add(10 * time.Second)
	for a.Err() == nil {
		select {
		case err := <-done:
			t.Fatalf("the archiver ended on a failing write: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the failing write is not reported")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // several retries
	select {
	case err := <-done:
		t.Fatalf("the archiver ended on a failing write: %v", err)
	default:
	}
	for _, b := range blockers {
		if err := os.Remove(b); err != nil {
			t.Fatal(err)
		}
	}
	f.waitArchived()
	if a.Err() != nil {
		t.Errorf("still failing after the disk came back: %v", a.Err())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.check(dir)
}
