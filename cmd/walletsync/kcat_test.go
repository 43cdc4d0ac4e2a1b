package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// peer finds an independent tool, or skips saying how to install it; under
// CI=true a missing peer fails the test.
func peer(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (%s): CI must run this peer", name, install)
		}
		t.Skipf("%s is not installed: %s", name, install)
	}
	return p
}

func kcat(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

type kcatMessage struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Offset    int64   `json:"offset"`
	Key       *string `json:"key"`
	Payload   *string `json:"payload"`
}

func kcatMessages(t *testing.T, out []byte) []kcatMessage {
	t.Helper()
	var msgs []kcatMessage
	for _, l := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m kcatMessage
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("kcat line %s: %v", l, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// librdkafka (Debian's kcat), a Kafka client nobody here wrote, against
// `walletsync run --kafka-listen`: it lists the embedded broker's topics,
// reads wallet.status and wallet.events.clean read_committed (the last
// status per key equals /v1/status; each eventId once), joins a consumer
// group, and produces canonical events straight into wallet.events, which
// are folded like posted ones.
func TestKcatAgainstTheEmbeddedBroker(t *testing.T) {
	peer(t, "kcat", "apt-get install kcat")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRole(t, "run", "--data-dir", t.TempDir(), "--kafka-listen", addr, "--partitions", "3", "--http", "127.0.0.1:0",
		"--log-level", "warn", "--transactional-id", "kcat", "--archive-dir", "none")
	lines := testStream()[:2000]
	postLines(t, r.url, lines, 500)
	waitCaughtUp(t, r.url)

	// The pipeline shows where its broker listens.
	if _, body := httpDo(t, "GET", r.url+"/v1/pipeline", "", nil); !strings.Contains(string(body), addr) {
		t.Errorf("/v1/pipeline does not name the broker %s: %s", addr, body)
	}
	var md struct {
		Brokers []struct{ Name string } `json:"brokers"`
		Topics  []struct {
			Topic      string `json:"topic"`
			Partitions []any  `json:"partitions"`
		} `json:"topics"`
	}
	if err := json.Unmarshal(kcat(t, nil, "-b", addr, "-L", "-J"), &md); err != nil {
		t.Fatal(err)
	}
	have := map[string]int{}
	for _, tp := range md.Topics {
		have[tp.Topic] = len(tp.Partitions)
	}
	for _, topic := range kafka.DefaultTopics().All() {
		if have[topic] != 3 {
			t.Errorf("kcat -L: topic %s has %d partitions, want 3 (%v)", topic, have[topic], have)
		}
	}

	// The last status per key, read by librdkafka read_committed, is the
	// status view's.
	statusOut := kcat(t, nil, "-b", addr, "-C", "-t", "wallet.status", "-e", "-J", "-q", "-X", "isolation.level=read_committed")
	last := map[string]kcatMessage{}
	for _, m := range kcatMessages(t, statusOut) {
		if m.Key == nil || m.Payload == nil {
			continue
		}
		if prev, ok := last[*m.Key]; !ok || m.Offset > prev.Offset {
			last[*m.Key] = m
		}
	}
	if len(last) < 100 {
		t.Fatalf("kcat read %d customers' statuses", len(last))
	}
	var got []string
	for _, m := range last {
		got = append(got, *m.Payload)
	}
	sort.Strings(got)
	_, view := httpDo(t, "GET", r.url+"/v1/status", "", nil)
	if g, w := sortedNormal(t, strings.Join(got, "\n")), sortedNormal(t, string(view)); g != w {
		t.Errorf("wallet.status as librdkafka reads it differs from /v1/status:\n%s", diffLines(g, w))
	}

	cleanOut := kcat(t, nil, "-b", addr, "-C", "-t", "wallet.events.clean", "-e", "-J", "-q", "-X", "isolation.level=read_committed")
	seen := map[string]int{}
	for _, m := range kcatMessages(t, cleanOut) {
		e, err := wire.ParseEvent([]byte(*m.Payload))
		if err != nil {
			t.Fatalf("clean record %s: %v", *m.Payload, err)
		}
		seen[e.ID]++
	}
	want := map[string]bool{}
	for _, l := range lines {
		if e, err := wire.ParseEvent(l); err == nil {
			want[e.ID] = true
		}
	}
	for id, n := range seen {
		if n != 1 || !want[id] {
			t.Errorf("clean topic via kcat: %s %d times (sent: %v)", id, n, want[id])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("clean topic via kcat: %d events, want %d", len(seen), len(want))
	}

	// A consumer group of librdkafka's: it joins, reads every status
	// record and commits; the broker reports its offsets.
	n := len(kcatMessages(t, statusOut))
	kcat(t, nil, "-b", addr, "-G", "kcat-peer", "-c", fmt.Sprint(n), "-q", "-X", "isolation.level=read_committed",
		"-X", "auto.offset.reset=earliest", "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100", "wallet.status")
	cl, err := kgo.NewClient(kafka.ClientOpts([]string{addr}, "test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), "kcat-peer")
	if err != nil || len(offs) == 0 {
		t.Errorf("the kcat group committed nothing: %v %v", offs, err)
	}

	// Canonical events produced by librdkafka straight into wallet.events
	// are folded like posted ones.
	extra := [][]byte{
		[]byte(`{"eventId":"kcat-1","type":"installed","platform":"apple","customerId":"via-kcat","occurredAt":"2026-04-01T10:00:00.000Z"}`),
		[]byte(`{"eventId":"kcat-2","type":"installed","platform":"google","customerId":"via-kcat","occurredAt":"2026-04-02T10:00:00.000Z"}`),
		[]byte(`{"eventId":"kcat-3","type":"uninstalled","platform":"apple","customerId":"via-kcat","occurredAt":"2026-04-03T10:00:00.000Z"}`),
		[]byte(`{"eventId":"kcat-4","type":"installed","platform":"google","customerId":"..","occurredAt":"2026-04-04T10:00:00.000Z"}`),
	}
	var in bytes.Buffer
	for _, l := range extra {
		e, _ := wire.ParseEvent(l)
		in.WriteString(e.CustomerID + "\t")
		in.Write(l)
		in.WriteByte('\n')
	}
	kcat(t, in.Bytes(), "-b", addr, "-P", "-t", "wallet.events", "-K", "\t")
	waitCaughtUp(t, r.url)
	// An id a path cannot carry is read with the query form.
	if code, body := httpDo(t, "GET", r.url+"/v1/customers?customerId=..", "", nil); code != 200 || !strings.Contains(string(body), `"customerId":".."`) {
		t.Errorf("/v1/customers?customerId=..: %d %s", code, body)
	}
	if code, _ := httpDo(t, "GET", r.url+"/v1/customers", "", nil); code != 400 {
		t.Errorf("/v1/customers without an id: %d, want 400", code)
	}
	_, after := httpDo(t, "GET", r.url+"/v1/status", "", nil)
	if g, w := sortedNormal(t, string(after)), sortedNormal(t, foldOf(t, append(append([][]byte{}, lines...), extra...))); g != w {
		t.Errorf("after events produced by kcat, /v1/status differs from the fold:\n%s", diffLines(g, w))
	}
}

// sortedNormal is normalise of status lines (or of a fold), sorted.
func sortedNormal(t *testing.T, ndjson string) string {
	t.Helper()
	n := ndjson
	if !strings.HasPrefix(strings.TrimSpace(n), "\"") {
		n = normalise(t, ndjson)
	}
	ls := strings.Split(strings.TrimSpace(n), "\n")
	sort.Strings(ls)
	return strings.Join(ls, "\n")
}

// librdkafka on wallet.passes and wallet.backfill.runs: a waiting event is
// read back with its documented key (passId, NUL, eventId) in the partition
// the documented hash gives (FNV-1a, 32 bits, of the passId, modulo the
// partition count, computed here with the standard library); a holder
// record kcat writes there in the documented form resolves it; and the
// backfill's report is a JSON record keyed by its run id.
func TestKcatOnThePassesAndRunsTopics(t *testing.T) {
	peer(t, "kcat", "apt-get install kcat")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRole(t, "run", "--data-dir", t.TempDir(), "--kafka-listen", addr, "--partitions", "3", "--http", "127.0.0.1:0",
		"--log-level", "warn", "--transactional-id", "kcat-passes", "--archive-dir", "none", "--webhook-secret", identitySecret)
	s := identityStream{hooks: []webhook{{id: "kp-dlv-1", body: []byte(`{"type":"Pass:Installed","date":"2026-03-01T09:00:00Z","data":{"passId":"kp-1","device":"apple","identifiers":{"loyaltyNumber":"L-1"}}}`)}}}
	if waiting := s.send(t, r.url); waiting != 1 {
		t.Fatalf("%d webhooks waited, want 1", waiting)
	}
	waitSettled(t, r.url, 1, time.Now().Add(60*time.Second))

	h := fnv.New32a()
	h.Write([]byte("kp-1"))
	part := int32(h.Sum32() % 3)
	var found bool
	for _, m := range kcatMessages(t, kcat(t, nil, "-b", addr, "-C", "-t", "wallet.passes", "-e", "-J", "-q", "-X", "isolation.level=read_committed")) {
		if m.Key == nil || *m.Key != "kp-1\x00kp-dlv-1" || m.Payload == nil {
			continue
		}
		found = true
		var e struct{ EventID, PassID, CustomerID, OccurredAt string }
		if err := json.Unmarshal([]byte(*m.Payload), &e); err != nil || e.EventID != "kp-dlv-1" || e.PassID != "kp-1" || e.CustomerID != "" || e.OccurredAt != "2026-03-01T09:00:00.000Z" {
			t.Errorf("waiting record %s (%v)", *m.Payload, err)
		}
		if m.Partition != part {
			t.Errorf("waiting record in partition %d, the documented hash says %d", m.Partition, part)
		}
	}
	if !found {
		t.Fatal("kcat did not find the waiting record on wallet.passes")
	}

	holder := `kp-1` + "\t" + `{"passId":"kp-1","customerId":"kc-1","source":"backfill","at":"2026-03-02T03:00:00Z"}` + "\n"
	kcat(t, []byte(holder), "-b", addr, "-P", "-t", "wallet.passes", "-p", fmt.Sprint(part), "-K", "\t")
	waitSettled(t, r.url, 0, time.Now().Add(60*time.Second))
	var st struct{ WalletStatus, AppleWalletInstalledAt string }
	_, body := httpDo(t, "GET", r.url+"/v1/customers/kc-1", "", nil)
	if err := json.Unmarshal(body, &st); err != nil || st.WalletStatus != "apple" || st.AppleWalletInstalledAt != "2026-03-01T09:00:00.000Z" {
		t.Errorf("after kcat's holder record: %s", body)
	}

	run := backfillOnce(t, addr).RunID
	var report struct {
		RunID string
		Done  bool
		Drift map[string]int
	}
	for _, m := range kcatMessages(t, kcat(t, nil, "-b", addr, "-C", "-t", "wallet.backfill.runs", "-e", "-J", "-q")) {
		if m.Key != nil && *m.Key == run && m.Payload != nil {
			_ = json.Unmarshal([]byte(*m.Payload), &report)
		}
	}
	if report.RunID != run || !report.Done || report.Drift["unknownPass"] != 2 {
		t.Errorf("wallet.backfill.runs as kcat reads it, run %s: %+v", run, report)
	}
}
