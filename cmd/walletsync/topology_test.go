package main

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/sinks/crm/crmtest"
)

// Defect (issue 17): the sinks' consumer groups were learned by side effect
// while `run` wired them, so a standalone `walletsync query` (as
// deploy/k8s/query.yaml runs it) reported a lag without the archive and
// CRM groups. It now reports the same consumers as run for one deployment.
func TestStandaloneQueryReportsRunsConsumers(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	b := strings.Join(emb.Brokers(), ",")
	receiver := crmtest.NewWebhookServer("whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=", crmtest.Faults{})
	defer receiver.Close()
	r := startRole(t, "run", "--brokers", b, "--partitions", "3", "--http", "127.0.0.1:0", "--log-level", "warn", "--transactional-id", "topology",
		"--archive-dir", t.TempDir(), "--archive-roll-interval", "200ms",
		"--crm-webhook-url", receiver.URL, "--crm-webhook-secret", "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=", "--crm-settle", "0s")
	q := startRole(t, "query", "--brokers", b, "--http", "127.0.0.1:0", "--log-level", "warn")
	postLines(t, r.url, testStream()[:1000], 500)
	waitCaughtUp(t, r.url)
	waitCaughtUp(t, q.url)
	consumers := func(url string) []string {
		_, body := httpDo(t, "GET", url+"/v1/pipeline", "", nil)
		var rep struct{ Consumers map[string]int64 }
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		return slices.Sorted(maps.Keys(rep.Consumers))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, want := consumers(q.url), consumers(r.url)
		if slices.Equal(got, want) {
			if !slices.Contains(want, "walletsync-archive") || !slices.Contains(want, "walletsync-crm-webhook") {
				t.Errorf("run's consumers lack the sinks: %v", want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("standalone query reports consumers %v, run %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
