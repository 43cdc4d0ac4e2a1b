package replay

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/sinks/parquet"
	"github.com/walletsync/walletsync/wire"
)

// writeArchive archives n synthetic clean events in two partitions.
func writeArchive(t *testing.T, n int) (string, []walletsync.Event) {
	t.Helper()
	dir := t.TempDir()
	evs := synth.Events(synth.Default(n))
	for p := range 2 {
		if err := parquet.WriteEvents(dir, int32(p), 0, evs[p*n/2:(p+1)*n/2]); err != nil {
			t.Fatal(err)
		}
	}
	return dir, evs
}

// A rebuild from the archive writes the statuses a fold of the same events
// gives, sorted by customerId; with no file to write to, it reports nothing.
func TestRebuildFromArchive(t *testing.T) {
	dir, evs := writeArchive(t, 2000)
	fold := walletsync.NewFold()
	for i := range evs {
		fold.Apply(&evs[i])
	}
	want := fold.Statuses()
	slices.SortFunc(want, func(a, b walletsync.Status) int { return strings.Compare(a.CustomerID, b.CustomerID) })
	var wantOut []byte
	for i := range want {
		wantOut = append(wire.AppendStatus(wantOut, &want[i], false), '\n')
	}

	var out bytes.Buffer
	rep, err := Rebuild(context.Background(), RebuildConfig{From: FromArchive, Dir: dir, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if rep != (RebuildReport{From: FromArchive, Events: len(evs), Customers: len(want)}) {
		t.Errorf("report %+v, want %d events, %d customers", rep, len(evs), len(want))
	}
	if !bytes.Equal(out.Bytes(), wantOut) {
		t.Error("the rebuild's statuses differ from a fold of the archived events")
	}

	file := filepath.Join(t.TempDir(), "statuses.ndjson")
	if _, err := Rebuild(context.Background(), RebuildConfig{From: FromArchive, Dir: dir, Out: file}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(file); err != nil || !bytes.Equal(b, wantOut) {
		t.Errorf("--out file: %v, %d bytes, want %d", err, len(b), len(wantOut))
	}

	rep, err = Rebuild(context.Background(), RebuildConfig{From: FromArchive, Dir: dir, Out: filepath.Join(t.TempDir(), "no", "such", "dir")})
	if err == nil || rep != (RebuildReport{}) {
		t.Errorf("unwritable output: %+v, %v; want a zero report and an error", rep, err)
	}
	if rep, err := Rebuild(context.Background(), RebuildConfig{Dir: dir}); err == nil || rep != (RebuildReport{}) {
		t.Errorf("no source: %+v, %v", rep, err)
	}
}

// The archive replays into wallet.events by default, and a topic replay
// copies it from an offset on, in every partition.
func TestArchiveThenTopic(t *testing.T) {
	dir, evs := writeArchive(t, 2000)
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "replay-test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, adm, kafka.DefaultTopics(), kafka.Layout{Partitions: 2, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, "copy"); err != nil {
		t.Fatal(err)
	}

	arep, err := Archive(ctx, ArchiveConfig{Brokers: emb.Brokers(), Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if arep != (ArchiveReport{Archive: dir, To: "wallet.events", Events: len(evs)}) {
		t.Errorf("archive report %+v", arep)
	}

	// A client of its own: the first one's metadata predates the records.
	cl2, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "replay-test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	ends, err := kadm.NewClient(cl2).ListEndOffsets(ctx, "wallet.events")
	if err != nil || ends.Error() != nil {
		t.Fatal(err, ends.Error())
	}
	const skip = 100
	want := int64(0)
	ends.Each(func(o kadm.ListedOffset) { want += max(o.Offset-skip, 0) })
	trep, err := Topic(ctx, TopicConfig{Brokers: emb.Brokers(), From: "wallet.events", To: "copy", FromOffset: skip})
	if err != nil {
		t.Fatal(err)
	}
	if trep != (TopicReport{From: "wallet.events", To: "copy", Records: want}) || want == 0 {
		t.Errorf("topic report %+v, want %d records", trep, want)
	}
}
