package processors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/api"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/processors"
	"github.com/walletsync/walletsync/wire"
)

// A test binary started with these variables is a processor, not a test
// run: the crash test kills such children with SIGKILL and starts them again.
const (
	childEnv   = "WALLETSYNC_TEST_PROCESSOR"
	brokersEnv = "WALLETSYNC_TEST_BROKERS"
)

func TestMain(m *testing.M) {
	if id := os.Getenv(childEnv); id != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		p, err := processors.New(processors.Config{
			Brokers: strings.Split(os.Getenv(brokersEnv), ","), TransactionalID: id,
			// Short enough that the race detector on two cores starves
			// members into being expelled while they still run, so the
			// test covers zombies as well as SIGKILL.
			SessionTimeout: 1500 * time.Millisecond, RebalanceTimeout: 10 * time.Second,
			// Checkpoints every few hundred events, so that members are
			// killed before, during and after them, and loads replay.
			CheckpointEvery: 300 * time.Millisecond, CheckpointEvents: 250,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("member", id),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		_ = p.Run(ctx)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type child struct {
	id  string
	cmd *exec.Cmd
}

func startChild(t *testing.T, id string, brokers []string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+id, brokersEnv+"="+strings.Join(brokers, ","))
	cmd.Stderr = os.Stderr
	// A child must not outlive a test that failed or panicked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{id: id, cmd: cmd}
	t.Cleanup(func() { c.kill() })
	return c
}

func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill() // SIGKILL: no chance to finish anything
		_ = c.cmd.Wait()
	}
}

// Three processors on a three-broker cluster; while events flow, members are
// killed with SIGKILL at random moments and restarted, and one is killed for
// good. The end state must still be exact: every status equals the fold of
// the events, each eventId is on the clean topic once, and no customer's
// status version is ever emitted twice or skipped.
func TestCrashedProcessorsStayExact(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes processors; skipped with -short")
	}
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 3}, kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	brokers := emb.Brokers()
	cl, err := kgo.NewClient(append(kafka.ClientOpts(brokers, "crash-test"), kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	topics := kafka.DefaultTopics()
	if err := kafka.EnsureTopics(ctx, adm, topics, kafka.Layout{Partitions: 6, Replication: 3}); err != nil {
		t.Fatal(err)
	}

	children := make([]*child, 3)
	for i := range children {
		children[i] = startChild(t, fmt.Sprintf("crash-%d", i), brokers)
	}

	cfg := synth.Default(12000)
	cfg.Customers, cfg.Seed = 400, 7
	events := synth.Events(cfg)
	rng := rand.New(rand.NewPCG(1, 2))
	var wg sync.WaitGroup
	stopKiller := make(chan struct{})
	wg.Add(1)
	go func() { // the killer
		defer wg.Done()
		for {
			select {
			case <-stopKiller:
				return
			case <-time.After(time.Duration(700+rng.IntN(900)) * time.Millisecond):
			}
			i := rng.IntN(2) // member 2 is killed for good below
			children[i].kill()
			children[i] = startChild(t, children[i].id, brokers)
		}
	}()
	for i := 0; i < len(events); i += 100 {
		var recs []*kgo.Record
		for _, e := range events[i:min(i+100, len(events))] {
			recs = append(recs, &kgo.Record{Topic: topics.Events, Key: []byte(e.CustomerID), Value: wire.AppendEvent(nil, &e)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if i == len(events)/2 {
			children[2].kill() // for good, mid-stream
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stopKiller)
	wg.Wait()

	lag := api.NewLag(adm, topics.Events, topics.Status, processors.DefaultGroup, nil, topics.Clean, topics.Status, topics.State, topics.DLQ)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rep, err := lag.Compute(ctx)
		if err == nil && rep.Lag == 0 && statusSettled(t, adm, topics.Status) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processors never caught up: %+v %v", rep, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	checkStatuses(t, topics.Status, events, func(topic string, fn func(*kgo.Record)) { readAll(t, brokers, adm, topic, fn) })
	ids := map[string]bool{}
	for i := range events {
		ids[events[i].ID] = true
	}
	clean := map[string]int{}
	readAll(t, brokers, adm, topics.Clean, func(r *kgo.Record) {
		var e struct{ EventID string }
		_ = json.Unmarshal(r.Value, &e)
		clean[e.EventID]++
	})
	for id, n := range clean {
		if n != 1 || !ids[id] {
			t.Errorf("eventId %s is on the clean topic %d times (sent: %v)", id, n, ids[id])
		}
	}
	if len(clean) != len(ids) {
		t.Errorf("clean topic holds %d events, want %d", len(clean), len(ids))
	}
}

// checkStatuses compares a status topic with the fold of evs (deduplicated
// in order): each customer's last record has the fold's fields, versions run
// 1, 2, 3… each once, and no customer is missing or extra.
func checkStatuses(t *testing.T, topic string, evs []walletsync.Event, read func(string, func(*kgo.Record))) {
	t.Helper()
	want := walletsync.NewFold()
	dd := walletsync.NewDeduper(0)
	for i := range evs {
		if !dd.Seen(evs[i].ID, 0) {
			want.Apply(&evs[i])
		}
	}
	got := map[string]walletsync.Fields{}
	versions := map[string][]uint64{}
	read(topic, func(r *kgo.Record) {
		st, err := wire.ParseStatus(r.Value)
		if err != nil {
			t.Fatalf("bad status record: %v", err)
		}
		got[st.CustomerID] = st.Fields
		versions[st.CustomerID] = append(versions[st.CustomerID], st.Version)
	})
	for _, s := range want.Statuses() {
		if got[s.CustomerID] != s.Fields {
			t.Errorf("customer %s: status %+v, the fold says %+v", s.CustomerID, got[s.CustomerID], s.Fields)
		}
		for i, v := range versions[s.CustomerID] {
			if v != uint64(i+1) {
				t.Fatalf("customer %s: versions %v, want 1, 2, 3, … each once", s.CustomerID, versions[s.CustomerID])
			}
		}
	}
	if len(got) != len(want.Statuses()) {
		t.Errorf("%d customers on %s, the fold has %d with a status", len(got), topic, len(want.Statuses()))
	}
}

// statusSettled: no transaction is open on the status topic.
func statusSettled(t *testing.T, adm *kadm.Client, topic string) bool {
	hwm, err1 := adm.ListEndOffsets(context.Background(), topic)
	lso, err2 := adm.ListCommittedOffsets(context.Background(), topic)
	if err1 != nil || err2 != nil {
		return false
	}
	settled := true
	hwm.Each(func(o kadm.ListedOffset) {
		if l, ok := lso.Lookup(o.Topic, o.Partition); !ok || l.Offset != o.Offset {
			settled = false
		}
	})
	return settled
}

func readAll(t *testing.T, brokers []string, adm *kadm.Client, topic string, fn func(*kgo.Record)) {
	t.Helper()
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	parts := []int32{}
	ends.Each(func(o kadm.ListedOffset) { parts = append(parts, o.Partition) })
	slices.Sort(parts)
	for _, p := range parts {
		if _, err := kafka.ReadPartition(context.Background(), brokers, adm, topic, p, -1, fn); err != nil {
			t.Fatal(err)
		}
	}
}
