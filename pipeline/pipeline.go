// Package pipeline declares walletsync's topology in one value: which
// components a deployment runs, which topics each reads and writes, under
// which consumer group, and after what it commits. Every role builds its
// Spec from its configuration; topic creation, the lag of /v1/pipeline,
// readiness and the startup log come from it, and docs/architecture.md is
// checked against it. Like goka's DefineGroup, one place shows the graph.
package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/walletsync/walletsync/internal/kafka"
)

// Component is one part of the pipeline as Kafka sees it.
type Component struct {
	Name string
	// Group is the consumer group whose committed offsets are the
	// component's progress ("" for none: ingest, the backfill, the status
	// view, which follows wallet.status by itself).
	Group  string
	Reads  []string
	Writes []string
	// Commits says when the group's offsets move: what a crash can make
	// the component do again.
	Commits string
	// Transactional: its writes and its offsets commit together.
	Transactional bool
	// Local: it writes to this process's own resources (the archive's
	// disk, the status view's memory), so its stall makes the process
	// unready; a remote sink's stall only degrades it.
	Local bool
}

// Spec is a deployment's topology.
type Spec struct {
	Topics     kafka.Topics
	Components []Component
}

// New starts an empty topology over t (the default topics when t is zero).
func New(t kafka.Topics) *Spec {
	if t == (kafka.Topics{}) {
		t = kafka.DefaultTopics()
	}
	return &Spec{Topics: t}
}

// Ingest is the HTTP intake.
func (s *Spec) Ingest() *Spec {
	return s.add(Component{Name: "ingest", Writes: []string{s.Topics.Events, s.Topics.Passes},
		Commits: "nothing: answers 2xx once Kafka acknowledged every accepted record"})
}

// Process is the processors' group.
func (s *Spec) Process(group string) *Spec {
	t := s.Topics
	return s.add(Component{Name: "process", Group: or(group, kafka.GroupProcess), Reads: []string{t.Events},
		Writes: []string{t.Clean, t.Status, t.State, t.DLQ, t.Passes}, Transactional: true, Local: true,
		Commits: "in the transaction that writes its outputs"})
}

// Resolve is the resolver: it folds the events waiting on wallet.passes
// into wallet.events once their pass's customer is known, and expires
// those that wait too long.
func (s *Spec) Resolve() *Spec {
	t := s.Topics
	return s.add(Component{Name: "resolve", Group: kafka.GroupResolve, Reads: []string{t.Passes},
		Writes: []string{t.Events, t.Passes, t.DLQ}, Transactional: true,
		Commits: "in the transaction that writes the resolved events (their tombstones follow in the next)"})
}

// Archive is the Parquet archive.
func (s *Spec) Archive() *Spec {
	return s.add(Component{Name: "archive", Group: kafka.GroupArchive, Reads: []string{s.Topics.Clean, s.Topics.Status}, Local: true,
		Commits: "after a roll's files are renamed into place (the files are the truth)"})
}

// ClickHouse is the ClickHouse sink.
func (s *Spec) ClickHouse() *Spec {
	return s.add(Component{Name: "clickhouse", Group: kafka.GroupClickHouse, Reads: []string{s.Topics.Clean, s.Topics.Status},
		Commits: "after ClickHouse acknowledged the batch"})
}

// CRM is the CRM sink of one destination.
func (s *Spec) CRM(destination string) *Spec {
	return s.add(Component{Name: "crm-" + destination, Group: kafka.GroupCRM(destination), Reads: []string{s.Topics.Status},
		Writes: []string{s.Topics.CRMDLQ}, Commits: "up to the first version not yet acknowledged or dead-lettered"})
}

// Backfill is the Pass API backfill.
func (s *Spec) Backfill() *Spec {
	return s.add(Component{Name: "backfill", Writes: []string{s.Topics.Events, s.Topics.Passes, kafka.BackfillTopic, kafka.BackfillRunsTopic},
		Commits: "its cursor on wallet.backfill after each page"})
}

// StatusView is the read API's view of wallet.status.
func (s *Spec) StatusView() *Spec {
	return s.add(Component{Name: ViewName, Reads: []string{s.Topics.Status}, Local: true,
		Commits: "nothing: rebuilt from wallet.status at start"})
}

// WaitingView is the read API's count of the events waiting on
// wallet.passes (/v1/pipeline's unmatched).
func (s *Spec) WaitingView() *Spec {
	return s.add(Component{Name: WaitingViewName, Reads: []string{s.Topics.Passes},
		Commits: "nothing: rebuilt from wallet.passes at start"})
}

// WaitingViewName names the waiting view (it has no group).
const WaitingViewName = "waiting-view"

// ViewName names the status view (it has no group).
const ViewName = "status-view"

func (s *Spec) add(c Component) *Spec {
	s.Components = append(s.Components, c)
	return s
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Check says what is wrong with the topology: a name or group used twice,
// a topic no component of the contract knows.
func (s *Spec) Check() error {
	known := append(s.Topics.All(), kafka.BackfillTopic, kafka.BackfillRunsTopic)
	names, groups := map[string]bool{}, map[string]bool{}
	var errs []error
	for _, c := range s.Components {
		if names[c.Name] {
			errs = append(errs, fmt.Errorf("component %s declared twice", c.Name))
		}
		names[c.Name] = true
		if c.Group != "" {
			if groups[c.Group] {
				errs = append(errs, fmt.Errorf("consumer group %s used by two components", c.Group))
			}
			groups[c.Group] = true
		}
		for _, t := range append(slices.Clone(c.Reads), c.Writes...) {
			if !slices.Contains(known, t) {
				errs = append(errs, fmt.Errorf("component %s uses topic %s, which is not one of the pipeline's", c.Name, t))
			}
		}
		if c.Group != "" && len(c.Reads) == 0 {
			errs = append(errs, fmt.Errorf("component %s has a group but reads nothing", c.Name))
		}
	}
	return errors.Join(errs...)
}

// Find returns the component named name.
func (s *Spec) Find(name string) (Component, bool) {
	for _, c := range s.Components {
		if c.Name == name {
			return c, true
		}
	}
	return Component{}, false
}

// SinkGroups are the groups that consume the processors' outputs, with the
// topics each reads: what /v1/pipeline counts besides the processors.
func (s *Spec) SinkGroups() map[string][]string {
	out := map[string][]string{}
	for _, c := range s.Components {
		if c.Group != "" && c.Name != "process" {
			out[c.Group] = c.Reads
		}
	}
	return out
}

// Destinations are the CRM sinks' destinations. A group of another name
// under kafka.GroupCRMPrefix is not a sink's: the DLQ replay's
// (walletsync-crm-replay-NAME) reads wallet.crm.dlq, not wallet.status.
var Destinations = []string{"webhook", "actito", "hubspot"}

// SinkOf says whether group is one a walletsync sink uses, and what that
// sink reads: how a role that does not run the sinks (a standalone query)
// recognises theirs on the cluster.
func SinkOf(t kafka.Topics, group string) (Component, bool) {
	s := New(t).Resolve().Archive().ClickHouse()
	for _, d := range Destinations {
		s.CRM(d)
	}
	for _, c := range s.Components {
		if c.Group == group {
			return c, true
		}
	}
	return Component{}, false
}

// Full is the topology of a deployment that runs everything, with the CRM
// destinations named: what docs/architecture.md shows.
func Full(destinations ...string) *Spec {
	s := New(kafka.Topics{}).Ingest().Backfill().Process("").Resolve().Archive().ClickHouse()
	for _, d := range destinations {
		s.CRM(d)
	}
	return s.StatusView().WaitingView()
}

// Markdown renders the topology as a table.
func (s *Spec) Markdown() string {
	var b strings.Builder
	b.WriteString("| component | consumer group | reads | writes | commits |\n|---|---|---|---|---|\n")
	code := func(xs []string) string {
		if len(xs) == 0 {
			return "—"
		}
		q := make([]string, len(xs))
		for i, x := range xs {
			q[i] = "`" + x + "`"
		}
		return strings.Join(q, ", ")
	}
	for _, c := range s.Components {
		group := "—"
		if c.Group != "" {
			group = "`" + c.Group + "`"
		}
		commits := c.Commits
		if c.Transactional {
			commits += " (one transaction)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", c.Name, group, code(c.Reads), code(c.Writes), commits)
	}
	return b.String()
}

// Summary is the topology in one log-friendly line per component.
func (s *Spec) Summary() []string {
	var out []string
	for _, c := range s.Components {
		out = append(out, fmt.Sprintf("%s group=%q reads=%v writes=%v", c.Name, c.Group, c.Reads, c.Writes))
	}
	return out
}
