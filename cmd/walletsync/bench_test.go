package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/replay"
	"github.com/walletsync/walletsync/sinks/parquet"
	"github.com/walletsync/walletsync/wire"
)

// BenchmarkFoldCommand is `walletsync fold` end to end over a 1M-line file
// (goal ≥ 500,000 lines/s): read, decode, dedupe, fold, sort, print.
func BenchmarkFoldCommand(b *testing.B) {
	path := filepath.Join(b.TempDir(), "events.ndjson")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	const lines = 1_000_000
	var size int64
	for _, l := range synth.Lines(synth.Default(lines)) {
		w.Write(l)
		w.WriteByte('\n')
		size += int64(len(l)) + 1
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		var errb strings.Builder
		code := run(context.Background(), []string{"fold", path}, env{stdout: io.Discard, stderr: &errb, getenv: func(string) string { return "" }})
		if code != 0 || !strings.Contains(errb.String(), `"rejected":0`) {
			b.Fatalf("exit %d: %s", code, errb.String())
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkReplayArchive: `walletsync replay archive` of 1M archived events
// into an in-process broker (goal ≥ 1M events/s), against producing the
// same records, already encoded in memory, to the same kind of broker.
func BenchmarkReplayArchive(b *testing.B) {
	const n = 1_000_000
	dir := b.TempDir()
	evs := synth.Events(synth.Default(n))
	for p := range 4 {
		chunk := evs[p*n/4 : (p+1)*n/4]
		if err := parquet.WriteEvents(dir, int32(p), 0, chunk); err != nil {
			b.Fatal(err)
		}
	}
	recs := make([]*kgo.Record, len(evs))
	for i := range evs {
		recs[i] = &kgo.Record{Topic: "wallet.events", Key: []byte(evs[i].CustomerID), Value: wire.AppendEvent(nil, &evs[i])}
	}
	run := func(b *testing.B, replay func(ctx context.Context, brokers []string) error) {
		var total time.Duration
		for b.Loop() {
			b.StopTimer()
			emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
			if err != nil {
				b.Fatal(err)
			}
			cl, _ := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "bench")...)
			if err := kafka.EnsureTopics(context.Background(), kadm.NewClient(cl), kafka.DefaultTopics(), kafka.Layout{Partitions: 6, Replication: 1}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			start := time.Now()
			if err := replay(context.Background(), emb.Brokers()); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			b.StopTimer()
			cl.Close()
			emb.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "events/s")
	}
	b.Run("produce_encoded_records_baseline", func(b *testing.B) {
		run(b, func(ctx context.Context, brokers []string) error {
			cl, err := kgo.NewClient(append(kafka.ClientOpts(brokers, "bench"), kgo.ProducerLinger(5*time.Millisecond))...)
			if err != nil {
				return err
			}
			defer cl.Close()
			for _, r := range recs {
				r.Partition, r.Offset = 0, 0
				cl.Produce(ctx, r, nil)
			}
			return cl.Flush(ctx)
		})
	})
	b.Run("replay_archive", func(b *testing.B) {
		run(b, func(ctx context.Context, brokers []string) error {
			rep, err := replay.Archive(ctx, replay.ArchiveConfig{Brokers: brokers, Dir: dir, To: "wallet.events"})
			if err == nil && rep.Events != n {
				return fmt.Errorf("replayed %v events", rep.Events)
			}
			return err
		})
	})
}
