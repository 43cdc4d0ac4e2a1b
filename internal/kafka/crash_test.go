package kafka

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// crashImage leaves, in a new directory, the data dir of an embedded broker
// as a SIGKILL would: three records committed in one transaction, then a
// second transaction with two records produced and never ended. The files
// are copied while the broker runs (its writes synced), so the copy has
// no session state: the broker that loads it knows only the logs, exactly
// as after a kill.
func crashImage(t *testing.T) string {
	t.Helper()
	live := t.TempDir()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(live), kfake.SyncWrites(), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	cl, err := kgo.NewClient(append(ClientOpts(c.ListenAddrs(), "crash-image"), kgo.TransactionalID("crash-image"), kgo.DefaultProduceTopic("t"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for txn, n := range []int{3, 2} {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte{byte('a' + txn), byte('0' + i)}}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if txn == 0 {
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
		}
	}
	img := t.TempDir()
	if err := os.CopyFS(img, os.DirFS(live)); err != nil {
		t.Fatal(err)
	}
	return img
}

// Defect (issue 15): after a kill during a transaction, kfake reloads the
// transaction as aborted but writes no marker after it, so the partition
// ends in batches a read_committed reader is never given. ReadPartition
// waited to see a record at the end and never returned: the processors'
// load, and with it the whole pipeline, wedged for good.
func TestReadPartitionEndsOnAbortedTail(t *testing.T) {
	img := crashImage(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(img)) // kfake alone: no marker written
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(ClientOpts(c.ListenAddrs(), "test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := WaitStable(ctx, adm, "t", 0); err != nil {
		t.Fatalf("the reloaded broker still has the transaction open: %v", err)
	}
	var got []string
	n, err := ReadPartition(ctx, c.ListenAddrs(), adm, "t", 0, -1, func(r *kgo.Record) { got = append(got, string(r.Value)) })
	if err != nil {
		t.Fatalf("ReadPartition over a log ending in an aborted transaction: %v (read %v)", err, got)
	}
	if n != 3 || len(got) != 3 || got[0] != "a0" || got[2] != "a2" {
		t.Fatalf("read %d records %v, want the committed a0 a1 a2", n, got)
	}
}

// The embedded broker ends such a transaction with the abort marker Kafka
// would have written, so that a plain read_committed consumer (the archive,
// the sinks, kcat) reads a record at the end of the log and its lag can
// reach 0; a second start finds nothing to mark.
func TestEmbeddedMarksCrashAborts(t *testing.T) {
	img := crashImage(t)
	e, err := StartEmbedded(EmbeddedConfig{DataDir: img})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.CrashAborts) != 1 || e.CrashAborts[0] != "t/0" {
		t.Errorf("marked %v, want [t/0]", e.CrashAborts)
	}
	cl, err := kgo.NewClient(append(ClientOpts(e.Brokers(), "test"),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"t": {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup("t", 0)
	var data []string
	for last := int64(-1); last < end.Offset-1; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("a read_committed consumer never reached the end %d (at %d, data %v)", end.Offset, last, data)
		}
		fs.EachRecord(func(r *kgo.Record) {
			last = r.Offset
			if !r.Attrs.IsControl() {
				data = append(data, string(r.Value))
			}
		})
	}
	cl.Close()
	if len(data) != 3 {
		t.Errorf("consumer read %v, want the three committed records", data)
	}
	e.Close()

	e, err = StartEmbedded(EmbeddedConfig{DataDir: img})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if len(e.CrashAborts) != 0 {
		t.Errorf("second start marked %v again", e.CrashAborts)
	}
}

// --kafka-listen: the brokers are at the address asked for and the next
// ports, and a wildcard host, which they would advertise, is refused.
func TestEmbeddedListen(t *testing.T) {
	var e *Embedded
	var addr string
	for try := 0; e == nil; try++ { // the next port may be taken: try others
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
		if e, err = StartEmbedded(EmbeddedConfig{Brokers: 2, Listen: addr}); err != nil && try > 5 {
			t.Fatal(err)
		}
	}
	defer e.Close()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	if got := e.Brokers(); len(got) != 2 || got[0] != addr || got[1] != net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)) {
		t.Errorf("brokers %v, want %s and the next port", got, addr)
	}
	for _, bad := range []string{"0.0.0.0:9092", ":9092", "localhost", "127.0.0.1:x", "[::]:9092"} {
		if _, err := StartEmbedded(EmbeddedConfig{Listen: bad}); err == nil {
			t.Errorf("listen %q accepted", bad)
		}
	}
}
