package pipeline_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/pipeline"
)

func TestTopologyChecks(t *testing.T) {
	if err := pipeline.Full("webhook", "actito", "hubspot").Check(); err != nil {
		t.Fatalf("the full topology: %v", err)
	}
	bad := pipeline.New(kafka.Topics{}).Archive().Archive()
	if err := bad.Check(); err == nil || !strings.Contains(err.Error(), "declared twice") || !strings.Contains(err.Error(), "two components") {
		t.Errorf("a component twice: %v", err)
	}
	odd := pipeline.New(kafka.Topics{})
	odd.Components = append(odd.Components, pipeline.Component{Name: "x", Group: "g", Reads: []string{"elsewhere"}})
	if err := odd.Check(); err == nil || !strings.Contains(err.Error(), "not one of the pipeline's") {
		t.Errorf("an unknown topic: %v", err)
	}
}

// A role that does not run the sinks recognises their groups on the
// cluster, and nothing else.
func TestSinkOf(t *testing.T) {
	topics := kafka.DefaultTopics()
	for group, reads := range map[string][]string{
		kafka.GroupArchive:        {topics.Clean, topics.Status},
		kafka.GroupClickHouse:     {topics.Clean, topics.Status},
		kafka.GroupCRM("hubspot"): {topics.Status},
	} {
		c, ok := pipeline.SinkOf(topics, group)
		if !ok || strings.Join(c.Reads, ",") != strings.Join(reads, ",") {
			t.Errorf("%s: %+v %v, want reads %v", group, c, ok, reads)
		}
	}
	for _, group := range []string{kafka.GroupProcess, kafka.GroupCRMPrefix, "kcat-peer", "walletsync-crm-replay-webhook", kafka.GroupCRM("other")} {
		if c, ok := pipeline.SinkOf(topics, group); ok {
			t.Errorf("%s taken for a sink: %+v", group, c)
		}
	}
}

// docs/architecture.md shows the declared topology, exactly.
func TestArchitectureDocMatchesTheTopology(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- topology: generated from pipeline.Full(\"webhook\", \"actito\", \"hubspot\").Markdown() -->\n", "<!-- /topology -->"
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/architecture.md lacks the topology markers %q … %q", begin, end)
	}
	if got, want := doc[i+len(begin):j], pipeline.Full("webhook", "actito", "hubspot").Markdown(); got != want {
		t.Errorf("docs/architecture.md's topology differs from the declared one; put this between the markers:\n%s", want)
	}
}
