package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/internal/kafka"
)

// Defect (issue 15): /readyz said 200 while the processors made no
// progress, and /v1/pipeline answered 503 just after the first 200. Here a
// transaction of another writer stays open on wallet.events.clean, so the
// processors' loads wait for it and nothing is folded: /readyz must turn
// 503 within the progress deadline, naming the processors and what they
// wait for, and turn 200 again once the transaction ends.
func TestReadinessReportsStalledProcessors(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx := context.Background()
	admCl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "test-admin")...)
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	topics := kafka.DefaultTopics()
	if err := kafka.EnsureTopics(ctx, kadm.NewClient(admCl), topics, kafka.Layout{Partitions: 3, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	zombie, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "zombie"),
		kgo.TransactionalID("another-writer"), kgo.TransactionTimeout(5*time.Minute), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Close()
	if err := zombie.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for p := range int32(3) {
		if err := zombie.ProduceSync(ctx, &kgo.Record{Topic: topics.Clean, Partition: p, Value: []byte("{}")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	r := startRole(t, "run", "--brokers", strings.Join(emb.Brokers(), ","), "--partitions", "3", "--http", "127.0.0.1:0", "--log-level", "warn",
		"--transactional-id", "ready", "--archive-dir", "none", "--progress-deadline", "2s")
	// The first 200 comes only once the pipeline is measured.
	waitReadyz(t, r.url, 200, "never ready")
	if code, body := httpDo(t, "GET", r.url+"/v1/pipeline", "", nil); code != 200 {
		t.Fatalf("/v1/pipeline right after the first ready /readyz: %d %s", code, body)
	}

	postLines(t, r.url, testStream()[:300], 300)
	var rd readiness
	if err := json.Unmarshal(waitReadyz(t, r.url, 503, "still ready while the processors cannot fold anything"), &rd); err != nil {
		t.Fatal(err)
	}
	why := rd.Reasons["walletsync-process"]
	if rd.Ready || !strings.Contains(why, "records behind") || !strings.Contains(why, "to be stable") || !strings.Contains(why, topics.Clean) {
		t.Errorf("/readyz does not say the processors wait for the open transaction: %+v", rd)
	}
	if !strings.Contains(r.stderr.String(), "a consumer makes no progress while it has lag") {
		t.Errorf("the stall is not logged:\n%s", r.stderr)
	}

	if err := zombie.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, r.url)
	waitReadyz(t, r.url, 200, "not ready again after the processors caught up")
}

// waitReadyz polls /readyz until it answers want, for up to 20 s, and
// returns the body.
func waitReadyz(t *testing.T, url string, want int, why string) []byte {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := httpDo(t, "GET", url+"/readyz", "", nil)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz %d %s", why, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
