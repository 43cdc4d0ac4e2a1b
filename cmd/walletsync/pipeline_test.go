package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/ingest/passapi/passapitest"
	"github.com/walletsync/walletsync/internal/chtest"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	chsink "github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/sinks/crm/crmtest"
	"github.com/walletsync/walletsync/wire"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type role struct {
	url    string
	stop   func() int
	stderr *syncBuffer
}

// startRole runs a subcommand in process, on a free port, until stopped.
func startRole(t *testing.T, args ...string) *role {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan int, 1)
	r := &role{stderr: &syncBuffer{}}
	go func() {
		done <- run(ctx, args, env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: r.stderr,
			getenv: func(string) string { return "" }, ready: func(a net.Addr) { addr <- a }})
	}()
	select {
	case a := <-addr:
		r.url = "http://" + a.String()
	case code := <-done:
		cancel()
		t.Fatalf("%v exited %d: %s", args, code, r.stderr)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("%v did not start: %s", args, r.stderr)
	}
	var once sync.Once
	code := 0
	r.stop = func() int {
		once.Do(func() { cancel(); code = <-done })
		return code
	}
	t.Cleanup(func() { r.stop() })
	return r
}

func httpDo(t *testing.T, method, url, ctype string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// waitCaughtUp polls /v1/pipeline until the lag is zero.
func waitCaughtUp(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last []byte
	for time.Now().Before(deadline) {
		code, b := httpDo(t, "GET", url+"/v1/pipeline", "", nil)
		last = b
		var rep struct{ Lag int64 }
		if code == 200 && json.Unmarshal(b, &rep) == nil && rep.Lag == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pipeline never caught up: %s", last)
}

func postLines(t *testing.T, url string, lines [][]byte, batch int) {
	t.Helper()
	for i := 0; i < len(lines); i += batch {
		body := bytes.Join(lines[i:min(i+batch, len(lines))], []byte("\n"))
		code, b := httpDo(t, "POST", url+"/v1/events", "application/x-ndjson", body)
		if code != 200 {
			t.Fatalf("POST /v1/events: %d %s", code, b)
		}
	}
}

// testStream is a few thousand events with everything the fold must get
// right: duplicates (some with other content), late events, observations
// that agree and that repair, same-millisecond ties, several passes.
func testStream() [][]byte {
	cfg := synth.Default(4000)
	cfg.Customers, cfg.Seed = 150, 42
	lines := synth.Lines(cfg)
	ties := []string{
		`{"eventId":"tie-b","type":"installed","platform":"apple","customerId":"tie","occurredAt":"2026-03-01T11:00:00.500Z"}`,
		`{"eventId":"tie-a","type":"uninstalled","platform":"apple","customerId":"tie","occurredAt":"2026-03-01T12:00:00.500999+01:00"}`,
		`{"eventId":"tie-a","type":"installed","platform":"apple","customerId":"tie","occurredAt":"2026-03-02T00:00:00Z"}`,
		`{"eventId":"obs-1","type":"observed","installed":true,"installedAt":"2025-12-24T08:00:00Z","platform":"google","customerId":"tie","passId":"gift","occurredAt":"2026-03-09T00:00:00Z"}`,
	}
	for _, l := range ties {
		lines = append(lines, []byte(l))
	}
	return lines
}

// foldOf is `walletsync fold` of the lines, reduced to the six fields.
func foldOf(t *testing.T, lines [][]byte) string {
	t.Helper()
	r := runCLI(t, string(bytes.Join(lines, []byte("\n"))), nil, "fold")
	if r.code != 0 {
		t.Fatalf("fold: %d %s", r.code, r.stderr)
	}
	return normalise(t, r.stdout)
}

// readTopic returns every committed record of a topic.
func readTopic(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kafka.ClientOpts(brokers, "test-reader")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	parts, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []*kgo.Record
	parts.Each(func(o kadm.ListedOffset) {
		if _, err := kafka.ReadPartition(ctx, brokers, adm, topic, o.Partition, -1, func(r *kgo.Record) { out = append(out, r) }); err != nil {
			t.Fatal(err)
		}
	})
	return out
}

// checkCleanTopic: each eventId of the input is on the clean topic exactly
// once, and nothing else is.
func checkCleanTopic(t *testing.T, brokers []string, lines [][]byte) {
	t.Helper()
	want := map[string]bool{}
	for _, l := range lines {
		if e, err := wire.ParseEvent(l); err == nil {
			want[e.ID] = true
		}
	}
	got := map[string]int{}
	for _, r := range readTopic(t, brokers, kafka.DefaultTopics().Clean) {
		e, err := wire.ParseEvent(r.Value)
		if err != nil {
			t.Fatalf("clean topic holds an invalid event %s: %v", r.Value, err)
		}
		got[e.ID]++
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("eventId %q is on the clean topic %d times", id, n)
		}
		if !want[id] {
			t.Errorf("eventId %q on the clean topic was never sent", id)
		}
	}
	if len(got) != len(want) {
		t.Errorf("clean topic holds %d distinct events, want %d", len(got), len(want))
	}
}

func TestPipelineEndToEnd(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	brokers := strings.Join(emb.Brokers(), ",")
	archive := t.TempDir()
	r := startRole(t, "run", "--brokers", brokers, "--partitions", "4", "--http", "127.0.0.1:0", "--log-level", "warn", "--transactional-id", "e2e", "--produce-timeout", "2s",
		"--archive-dir", archive, "--archive-roll-interval", "200ms")

	lines := testStream()
	postLines(t, r.url, lines, 500)
	// A client retrying a whole batch changes nothing.
	postLines(t, r.url, lines[:300], 300)

	// Broker unavailable: every produce is answered NOT_ENOUGH_REPLICAS.
	// The client gets 503 and retries once the broker is back; the events
	// reach the clean topic once (checked below with all the others).
	late := [][]byte{
		[]byte(`{"eventId":"during-outage-1","type":"installed","platform":"google","customerId":"outage","occurredAt":"2026-03-05T10:00:00Z"}`),
		[]byte(`{"eventId":"during-outage-2","type":"uninstalled","platform":"google","customerId":"outage","occurredAt":"2026-03-05T11:00:00Z"}`),
	}
	emb.SetProduceUnavailable(true)
	code, body := httpDo(t, "POST", r.url+"/v1/events", "application/x-ndjson", bytes.Join(late, []byte("\n")))
	emb.SetProduceUnavailable(false)
	if code != 503 {
		t.Fatalf("POST with the broker down: %d %s", code, body)
	}
	postLines(t, r.url, late, 2)
	lines = append(lines, late...)

	// Records that break the contract straight on the topic go to the DLQ.
	cl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "rogue")...)
	if err != nil {
		t.Fatal(err)
	}
	bad := []*kgo.Record{
		{Topic: "wallet.events", Key: []byte("x"), Value: []byte("garbage")},
		{Topic: "wallet.events", Key: []byte("someone-else"), Value: lines[0]},
	}
	if err := cl.ProduceSync(context.Background(), bad...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	waitCaughtUp(t, r.url)
	code, body = httpDo(t, "GET", r.url+"/v1/status", "", nil)
	if code != 200 {
		t.Fatalf("/v1/status: %d", code)
	}
	if got, want := normalise(t, string(body)), foldOf(t, lines); got != want {
		t.Fatalf("/v1/status differs from walletsync fold of the same events:\n%s", diffLines(got, want))
	}
	checkCleanTopic(t, emb.Brokers(), lines)

	dlq := readTopic(t, emb.Brokers(), "wallet.events.dlq")
	if len(dlq) != 2 {
		t.Fatalf("DLQ holds %d records, want 2", len(dlq))
	}
	h := map[string]string{}
	for _, hd := range dlq[0].Headers {
		h[hd.Key] = string(hd.Value)
	}
	if string(dlq[0].Value) != "garbage" && string(dlq[1].Value) != "garbage" || h[kafka.HeaderTopic] != "wallet.events" || h[kafka.HeaderOffset] == "" || h[kafka.HeaderError] == "" {
		t.Errorf("DLQ record: %s %v", dlq[0].Value, h)
	}

	code, body = httpDo(t, "GET", r.url+"/v1/customers/tie", "", nil)
	if code != 200 || !strings.Contains(string(body), `"walletStatus":"google"`) {
		t.Errorf("/v1/customers/tie: %d %s", code, body)
	}
	if code, _ := httpDo(t, "GET", r.url+"/v1/customers/nobody", "", nil); code != 404 {
		t.Errorf("unknown customer: %d", code)
	}
	code, body = httpDo(t, "GET", r.url+"/metrics", "", nil)
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, m := range []string{"walletsync_process_duplicates_total", "walletsync_ingest_events_accepted_total", `walletsync_process_rejected_total{field="json"} 1`, `walletsync_process_rejected_total{field="key"} 1`, "walletsync_pipeline_lag 0", "walletsync_status_view_customers 152", "walletsync_ingest_produce_failures_total 2"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if code, _ := httpDo(t, "GET", r.url+"/readyz", "", nil); code != 200 {
		t.Errorf("/readyz: %d", code)
	}
	// Without ClickHouse the insights come from the Parquet archive.
	want := map[string][2]int{}
	seen := map[string]bool{}
	for _, l := range lines {
		e, err := wire.ParseEvent(l)
		if err != nil || seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		if string(wire.AppendTime(nil, e.OccurredAt)[:10]) == "2026-01-01" {
			c := want[e.Platform.String()]
			switch e.Type {
			case walletsync.TypeInstalled:
				c[0]++
			case walletsync.TypeUninstalled:
				c[1]++
			}
			want[e.Platform.String()] = c
		}
	}
	code, body = httpDo(t, "GET", r.url+"/v1/insights/daily?from=2026-01-01&to=2026-01-02", "", nil)
	var ans struct {
		Rows []struct {
			Platform             string
			Installs, Uninstalls int
		}
	}
	if code != 200 || json.Unmarshal(body, &ans) != nil || len(ans.Rows) != 2 {
		t.Fatalf("insights from the archive: %d %s", code, body)
	}
	for _, row := range ans.Rows {
		if w := want[row.Platform]; row.Installs != w[0] || row.Uninstalls != w[1] {
			t.Errorf("daily from the archive, %s: %d installs %d uninstalls, the events say %v", row.Platform, row.Installs, row.Uninstalls, w)
		}
	}
	if c := r.stop(); c != 0 {
		t.Errorf("run exited %d: %s", c, r.stderr)
	}
}

func diffLines(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var b strings.Builder
	fmt.Fprintf(&b, "%d lines, want %d\n", len(g), len(w))
	for i := 0; i < max(len(g), len(w)) && b.Len() < 3000; i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			fmt.Fprintf(&b, "got  %s\nwant %s\n", gl, wl)
		}
	}
	return b.String()
}

// Stop and start `walletsync run` on the same data dir: every status is
// still there with its version, and the dedupe memory too.
func TestRunRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	args := []string{"run", "--data-dir", dir, "--partitions", "3", "--http", "127.0.0.1:0", "--log-level", "warn", "--transactional-id", "restart", "--archive-roll-interval", "200ms"}
	lines := testStream()[:1500]
	r := startRole(t, args...)
	// Posting at once matters: with a data dir, kfake shows a transaction's
	// offsets to a stable offset fetch before the transaction ends, and
	// /v1/pipeline must still not report "caught up" while it is open.
	postLines(t, r.url, lines, 500)
	waitCaughtUp(t, r.url)
	_, before := httpDo(t, "GET", r.url+"/v1/status", "", nil)
	if c := r.stop(); c != 0 {
		t.Fatalf("run exited %d: %s", c, r.stderr)
	}

	r = startRole(t, args...)
	waitCaughtUp(t, r.url)
	_, after := httpDo(t, "GET", r.url+"/v1/status", "", nil)
	if string(after) != string(before) || len(after) == 0 {
		t.Fatalf("statuses changed across a restart:\n%s", diffLines(string(after), string(before)))
	}
	// The same events again are all duplicates: no status moves, no version.
	postLines(t, r.url, lines, 500)
	waitCaughtUp(t, r.url)
	_, again := httpDo(t, "GET", r.url+"/v1/status", "", nil)
	if string(again) != string(before) {
		t.Fatalf("re-sent events changed statuses:\n%s", diffLines(string(again), string(before)))
	}
	_, m := httpDo(t, "GET", r.url+"/metrics", "", nil)
	if !strings.Contains(string(m), fmt.Sprintf("walletsync_process_duplicates_total %d", len(lines))) {
		t.Errorf("after the restart every re-sent event should be a duplicate; metrics:\n%s", grepLines(string(m), "walletsync_process_"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// walletsync run with --clickhouse: the sink's group counts in
// /v1/pipeline, and once the lag is zero ClickHouse holds every event once
// and the current status of every customer as /v1/status shows it.
func TestRunWithClickHouse(t *testing.T) {
	ch := chtest.Start(t)
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	r := startRole(t, "run", "--brokers", strings.Join(emb.Brokers(), ","), "--partitions", "3", "--http", "127.0.0.1:0", "--archive-dir", "none",
		"--log-level", "warn", "--transactional-id", "with-ch", "--clickhouse", ch.DSN(), "--clickhouse-batch-interval", "100ms")
	lines := testStream()[:2000]
	postLines(t, r.url, lines, 500)
	waitCaughtUp(t, r.url)
	_, rep := httpDo(t, "GET", r.url+"/v1/pipeline", "", nil)
	if !strings.Contains(string(rep), `"walletsync-clickhouse":0`) {
		t.Fatalf("/v1/pipeline does not count the ClickHouse sink: %s", rep)
	}
	conn := ch.Conn(t)
	ctx := context.Background()
	distinct := map[string]bool{}
	for _, l := range lines {
		if e, err := wire.ParseEvent(l); err == nil {
			distinct[e.ID] = true
		}
	}
	var events uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM wallet_events FINAL").Scan(&events); err != nil || events != uint64(len(distinct)) {
		t.Fatalf("wallet_events holds %d events (%v), want %d", events, err, len(distinct))
	}
	rows, err := conn.Query(ctx, `SELECT customer_id, version, toString(wallet_status) FROM wallet_status_current FINAL ORDER BY customer_id`)
	if err != nil {
		t.Fatal(err)
	}
	var fromCH strings.Builder
	for rows.Next() {
		var id, wallet string
		var v uint64
		if err := rows.Scan(&id, &v, &wallet); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&fromCH, "%s %d %s\n", id, v, wallet)
	}
	rows.Close()
	_, body := httpDo(t, "GET", r.url+"/v1/status", "", nil)
	var fromAPI strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		var s struct {
			CustomerID   string
			Version      uint64
			WalletStatus string
		}
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&fromAPI, "%s %d %s\n", s.CustomerID, s.Version, s.WalletStatus)
	}
	if fromCH.String() != fromAPI.String() {
		t.Fatalf("wallet_status_current differs from /v1/status:\n%s", diffLines(fromCH.String(), fromAPI.String()))
	}

	// The insight API over the same store.
	code, body := httpDo(t, "GET", r.url+"/v1/insights/daily?from=2026-01-01&to=2026-01-03&by=medium", "", nil)
	var ans struct {
		Query, From, To, By string
		Rows                []map[string]any
	}
	if err := json.Unmarshal(body, &ans); code != 200 || err != nil || ans.Query != "daily" || ans.By != "medium" || len(ans.Rows) == 0 {
		t.Fatalf("daily insight: %d %s", code, body)
	}
	var installs float64
	for _, row := range ans.Rows {
		installs += row["installs"].(float64)
	}
	if installs == 0 {
		t.Errorf("daily insight counted no installs: %s", body)
	}
	for path, want := range map[string]int{
		"/v1/insights/status?from=2026-01-01&to=2026-01-02":         200,
		"/v1/insights/daily?from=2026-01-02&to=2026-01-01":          400,
		"/v1/insights/weekly?from=2026-01-01&to=2026-01-02":         400,
		"/v1/insights/retention?from=2026-01-01&to=2026-01-02":      200,
		"/v1/insights/installed-base?from=2026-01-01&to=2026-01-02": 200,
		"/v1/insights/daily?from=2026-01-01&to=2026-01-02&by=color": 400,
	} {
		if code, body := httpDo(t, "GET", r.url+path, "", nil); code != want {
			t.Errorf("%s: %d %s, want %d", path, code, body, want)
		}
	}
}

// walletsync run with a CRM webhook and HubSpot: both sinks' groups count
// in /v1/pipeline, and once the lag is zero each CRM holds what /v1/status
// shows, version included.
func TestRunWithCRMSinks(t *testing.T) {
	hook := crmtest.NewWebhookServer("whsec_dGVzdC1zZWNyZXQ=", crmtest.Faults{})
	defer hook.Close()
	hub := crmtest.NewHubSpotServer("pat-1", crmtest.Faults{})
	defer hub.Close()
	r := startRole(t, "run", "--data-dir", t.TempDir(), "--partitions", "3", "--http", "127.0.0.1:0", "--log-level", "warn", "--archive-roll-interval", "200ms",
		"--transactional-id", "with-crm", "--crm-settle", "200ms", "--crm-rate", "1000",
		"--crm-webhook-url", hook.URL, "--crm-webhook-secret", "whsec_dGVzdC1zZWNyZXQ=",
		"--hubspot-url", hub.URL, "--hubspot-token", "pat-1", "--hubspot-id-property", "customer_key")
	lines := testStream()[:1500]
	postLines(t, r.url, lines, 500)
	waitCaughtUp(t, r.url)
	_, rep := httpDo(t, "GET", r.url+"/v1/pipeline", "", nil)
	for _, g := range []string{"walletsync-crm-webhook", "walletsync-crm-hubspot"} {
		if !strings.Contains(string(rep), `"`+g+`":0`) {
			t.Fatalf("/v1/pipeline does not count %s: %s", g, rep)
		}
	}
	_, body := httpDo(t, "GET", r.url+"/v1/status", "", nil)
	want := map[string]crmtest.Record{}
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		var s struct {
			CustomerID              string
			WalletStatus            string
			AppleWalletInstalledAt  *string
			GoogleWalletInstalledAt *string
			WalletLastChangedAt     string
			WalletLastEvent         string
			FirstInstalledAt        *string
			PassIssuedAt            *string
			Version                 uint64
		}
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatal(err)
		}
		deref := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		want[s.CustomerID] = crmtest.Record{WalletStatus: s.WalletStatus, AppleAt: deref(s.AppleWalletInstalledAt), GoogleAt: deref(s.GoogleWalletInstalledAt),
			LastChangedAt: s.WalletLastChangedAt, LastEvent: s.WalletLastEvent, FirstInstalledAt: deref(s.FirstInstalledAt), PassIssuedAt: deref(s.PassIssuedAt),
			Version: s.Version}
	}
	for name, got := range map[string]map[string]crmtest.Record{"webhook": hook.Records(), "hubspot": hub.Records()} {
		if len(got) != len(want) {
			t.Errorf("%s holds %d customers, /v1/status %d", name, len(got), len(want))
		}
		for id, w := range want {
			if got[id] != w {
				t.Errorf("%s: customer %s is %+v, /v1/status says %+v", name, id, got[id], w)
				break
			}
		}
	}
	_, m := httpDo(t, "GET", r.url+"/metrics", "", nil)
	if !strings.Contains(string(m), `walletsync_crm_delivered_total{destination="hubspot"}`) {
		t.Errorf("no CRM metrics:\n%s", grepLines(string(m), "walletsync_crm"))
	}
}

// statusFields maps customerId to the six status fields of NDJSON status
// lines (version left out: it depends on arrival order).
func statusFields(t *testing.T, ndjson string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(ndjson), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		id := m["customerId"].(string)
		delete(m, "version")
		b, _ := json.Marshal(m)
		out[id] = string(b)
	}
	return out
}

// The archive written by walletsync run, rebuilt, equals walletsync fold of
// the events; replayed into a fresh pipeline it gives the same statuses,
// and replaying it twice changes nothing.
func TestArchiveRebuildAndReplay(t *testing.T) {
	dir := t.TempDir()
	lines := testStream()[:2000]
	r := startRole(t, "run", "--data-dir", dir, "--partitions", "3", "--http", "127.0.0.1:0", "--log-level", "warn",
		"--transactional-id", "archive", "--archive-roll-interval", "200ms")
	postLines(t, r.url, lines, 500)
	waitCaughtUp(t, r.url)
	_, before := httpDo(t, "GET", r.url+"/v1/status", "", nil)
	if c := r.stop(); c != 0 {
		t.Fatalf("run exited %d: %s", c, r.stderr)
	}
	archive := filepath.Join(dir, "archive")
	fold := runCLI(t, string(bytes.Join(lines, []byte("\n"))), nil, "fold")
	want := statusFields(t, fold.stdout)
	if len(want) == 0 || !maps.Equal(statusFields(t, string(before)), want) {
		t.Fatal("the pipeline and walletsync fold disagree before any replay")
	}

	rb := runCLI(t, "", nil, "replay", "rebuild", "--from", "archive", "--archive-dir", archive)
	if rb.code != 0 || !maps.Equal(statusFields(t, rb.stdout), want) {
		t.Fatalf("rebuild from the archive (exit %d, %s) differs from walletsync fold", rb.code, rb.stderr)
	}
	if !strings.Contains(rb.stderr, `"customers":`+fmt.Sprint(len(want))) {
		t.Errorf("rebuild summary: %s", rb.stderr)
	}
	rebuildIntoClickHouseTwice(t, archive)

	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	brokers := strings.Join(emb.Brokers(), ",")
	fresh := startRole(t, "run", "--brokers", brokers, "--partitions", "3", "--http", "127.0.0.1:0", "--log-level", "warn",
		"--transactional-id", "fresh", "--archive-dir", "none")
	var after []byte
	for round := range 2 {
		if res := runCLI(t, "", nil, "replay", "archive", "--archive-dir", archive, "--brokers", brokers); res.code != 0 {
			t.Fatalf("replay archive: %d %s", res.code, res.stderr)
		}
		waitCaughtUp(t, fresh.url)
		_, got := httpDo(t, "GET", fresh.url+"/v1/status", "", nil)
		if round == 0 {
			if !maps.Equal(statusFields(t, string(got)), want) {
				t.Fatal("the archive replayed into a fresh pipeline gives other statuses")
			}
			after = got
		} else if string(got) != string(after) {
			t.Fatalf("replaying the archive twice changed statuses or versions:\n%s", diffLines(string(got), string(after)))
		}
	}
	_, m := httpDo(t, "GET", fresh.url+"/metrics", "", nil)
	if !strings.Contains(string(m), fmt.Sprintf("walletsync_process_duplicates_total %d", countDistinct(lines))) {
		t.Errorf("the second replay should be all duplicates:\n%s", grepLines(string(m), "walletsync_process_"))
	}
}

// A rebuild loaded into ClickHouse twice (as after a first load that failed
// half-way) leaves daily counting each event once: the second load marks
// its months dirty before it inserts.
func rebuildIntoClickHouseTwice(t *testing.T, archive string) {
	ch := chtest.Start(t)
	conn := ch.Conn(t)
	ctx := context.Background()
	var daily [2]string
	for round := range 2 {
		rb := runCLI(t, "", nil, "replay", "rebuild", "--from", "archive", "--archive-dir", archive, "--out", filepath.Join(t.TempDir(), "s.ndjson"), "--clickhouse", ch.DSN())
		if rb.code != 0 || !strings.Contains(rb.stderr, `"clickhouse":"loaded"`) {
			t.Fatalf("rebuild into ClickHouse, round %d: exit %d, %s", round, rb.code, rb.stderr)
		}
		var first, last time.Time
		if err := conn.QueryRow(ctx, "SELECT min(occurred_at), max(occurred_at) FROM wallet_events").Scan(&first, &last); err != nil {
			t.Fatal(err)
		}
		q := runCLI(t, "", nil, "query", "daily", "--from", first.UTC().Format(time.DateOnly), "--to", last.UTC().AddDate(0, 0, 1).Format(time.DateOnly),
			"--format", "csv", "--clickhouse", ch.DSN())
		if q.code != 0 || strings.Count(q.stdout, "\n") < 2 {
			t.Fatalf("query daily, round %d: %+v", round, q)
		}
		daily[round] = q.stdout
	}
	if daily[1] != daily[0] {
		t.Errorf("daily after loading the rebuild twice differs from once:\n%s", diffLines(daily[1], daily[0]))
	}
	if dirty, err := chsink.DirtyMonths(ctx, conn); err != nil || len(dirty) == 0 {
		t.Errorf("the second load marked no month dirty: %v, %v", dirty, err)
	}
}

func countDistinct(lines [][]byte) int {
	ids := map[string]bool{}
	for _, l := range lines {
		if e, err := wire.ParseEvent(l); err == nil {
			ids[e.ID] = true
		}
	}
	return len(ids)
}

// The backfill against a local Pass API with drift: installs and
// uninstalls the webhooks missed are repaired, agreeing customers get no new
// status version; a run whose API fails halfway resumes at the failed page.
func TestBackfillRepairsDriftAndResumes(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	brokers := strings.Join(emb.Brokers(), ",")
	r := startRole(t, "run", "--brokers", brokers, "--partitions", "3", "--http", "127.0.0.1:0", "--log-level", "warn",
		"--transactional-id", "backfill", "--archive-dir", "none")

	// The webhooks said: customers 0-39 installed apple, 40-59 nothing.
	var lines [][]byte
	for i := range 40 {
		lines = append(lines, []byte(fmt.Sprintf(`{"eventId":"w%d","customerId":"cust-%d","passId":"pass-%d","platform":"apple","type":"installed","occurredAt":"2026-01-05T10:00:00Z"}`, i, i, i)))
	}
	postLines(t, r.url, lines, 100)
	waitCaughtUp(t, r.url)
	// The truth: 0-19 as the webhooks said; 20-39 uninstalled since
	// (missed uninstalls); 40-59 installed on google (missed installs).
	at := time.Date(2026, 1, 6, 8, 0, 0, 0, time.UTC)
	var passes []passapitest.Pass
	want := map[string]string{}
	for i := range 60 {
		p := passapitest.Pass{ID: fmt.Sprintf("pass-%d", i), PassType: "loyalty", Identifiers: map[string]string{"customerId": fmt.Sprintf("cust-%d", i)}}
		switch {
		case i < 20:
			p.Apple = &at
			want[fmt.Sprintf("cust-%d", i)] = "apple"
		case i < 40:
			want[fmt.Sprintf("cust-%d", i)] = "none"
		default:
			p.Google = &at
			want[fmt.Sprintf("cust-%d", i)] = "google"
		}
		passes = append(passes, p)
	}
	api := passapitest.New("brand", "k")
	defer api.Close()
	api.SetPasses(passes)
	_, before := httpDo(t, "GET", r.url+"/v1/status", "", nil)

	args := []string{"backfill", "--once", "--brokers", brokers, "--passapi-url", api.URL, "--passapi-tenant", "brand", "--passapi-key", "k",
		"--passapi-page-size", "10", "--passapi-rate", "1000", "--passapi-max-attempts", "2", "--log-level", "warn"}
	api.SetFailFromPage(3)
	if res := runCLI(t, "", nil, args...); res.code != exitFail || !strings.Contains(res.stdout, `"done":false`) {
		t.Fatalf("a backfill whose API fails at page 3 should stop: %d %s %s", res.code, res.stdout, res.stderr)
	}
	firstRun := len(api.Pages())
	api.SetFailFromPage(-1)
	res := runCLI(t, "", nil, args...)
	if res.code != 0 || !strings.Contains(res.stdout, `"resumed":true`) || !strings.Contains(res.stdout, `"done":true`) {
		t.Fatalf("resumed backfill: %d %s %s", res.code, res.stdout, res.stderr)
	}
	if resumedAt := api.Pages()[firstRun]; resumedAt != 3 {
		t.Errorf("the resumed run started at page %d, want 3 (pages: %v)", resumedAt, api.Pages())
	}
	waitCaughtUp(t, r.url)
	_, after := httpDo(t, "GET", r.url+"/v1/status", "", nil)
	versionsBefore := versionsOf(t, before)
	for id, v := range versionsOf(t, after) {
		var s struct{ WalletStatus string }
		_, body := httpDo(t, "GET", r.url+"/v1/customers/"+id, "", nil)
		_ = json.Unmarshal(body, &s)
		if s.WalletStatus != want[id] {
			t.Errorf("%s: %s after the backfill, the Pass API says %s", id, s.WalletStatus, want[id])
		}
		if n, _ := fmt.Sscan(strings.TrimPrefix(id, "cust-"), new(int)); n == 1 {
			var i int
			fmt.Sscan(strings.TrimPrefix(id, "cust-"), &i)
			if i < 20 && v != versionsBefore[id] {
				t.Errorf("%s agreed with the Pass API but its version moved from %d to %d", id, versionsBefore[id], v)
			}
		}
	}
	if len(versionsOf(t, after)) != 60 {
		t.Errorf("%d customers after the backfill, want 60", len(versionsOf(t, after)))
	}
	_, m := httpDo(t, "GET", r.url+"/metrics", "", nil)
	for _, line := range []string{`walletsync_process_drift_repaired_total{platform="apple"} 20`, `walletsync_process_drift_repaired_total{platform="google"} 20`} {
		if !strings.Contains(string(m), line) {
			t.Errorf("metrics lack %s:\n%s", line, grepLines(string(m), "drift"))
		}
	}

	// The listing now gives creation dates: the next run adds passIssuedAt
	// to every customer, and to those whose registers agreed all along
	// (0-19) one version each, the run after it nothing (its issued events
	// are duplicates of the first ones). The others move at every run, as
	// before: their registers hold the observations, which each run dates
	// anew.
	created := time.Date(2026, 1, 2, 9, 30, 0, 0, time.UTC)
	for i := range passes {
		passes[i].Created = &created
	}
	api.SetPasses(passes)
	issuedStatuses := func() map[string]uint64 {
		waitCaughtUp(t, r.url)
		_, body := httpDo(t, "GET", r.url+"/v1/status", "", nil)
		for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
			var s struct{ CustomerID, PassIssuedAt string }
			if json.Unmarshal([]byte(l), &s) != nil || s.PassIssuedAt != "2026-01-02T09:30:00.000Z" {
				t.Errorf("after a backfill with creation dates: %s", l)
			}
		}
		return versionsOf(t, body)
	}
	for run := range 2 {
		if res := runCLI(t, "", nil, args...); res.code != 0 || !strings.Contains(res.stdout, `"issued":60`) {
			t.Fatalf("backfill with creation dates: %d %s %s", res.code, res.stdout, res.stderr)
		}
		got := issuedStatuses()
		for id, v := range got {
			var i int
			if _, err := fmt.Sscan(strings.TrimPrefix(id, "cust-"), &i); err != nil || i >= 20 {
				continue
			}
			if moved := v - versionsOf(t, after)[id]; moved != 1 {
				t.Errorf("run %d: %s moved %d versions since the repair, want 1 (passIssuedAt, once)", run, id, moved)
			}
		}
	}
}

func versionsOf(t *testing.T, ndjson []byte) map[string]uint64 {
	out := map[string]uint64{}
	for _, l := range strings.Split(strings.TrimSpace(string(ndjson)), "\n") {
		var s struct {
			CustomerID string
			Version    uint64
		}
		if json.Unmarshal([]byte(l), &s) == nil && s.CustomerID != "" {
			out[s.CustomerID] = s.Version
		}
	}
	return out
}

// replay topic copies a topic's committed records, every partition, from an
// offset or from a time, keys, values and headers included.
func TestReplayTopic(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cl, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "replay-test"), kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	for _, topic := range []string{"src", "dst-all", "dst-time"} {
		if _, err := adm.CreateTopic(ctx, 2, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i := range 40 {
		recs = append(recs, &kgo.Record{Topic: "src", Key: []byte(fmt.Sprint("k", i%7)), Value: []byte(fmt.Sprint("v", i)),
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(fmt.Sprint(i))}}, Timestamp: base.Add(time.Duration(i) * time.Minute)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	brokers := strings.Join(emb.Brokers(), ",")
	read := func(topic string) map[string]string {
		out := map[string]string{}
		for p := range int32(2) {
			for try := 0; ; try++ {
				_, err := kafka.ReadPartition(ctx, emb.Brokers(), adm, topic, p, -1, func(r *kgo.Record) {
					out[string(r.Value)] = string(r.Key) + "/" + string(r.Headers[0].Value)
				})
				if err == nil {
					break
				}
				if try == 20 {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		return out
	}
	if r := runCLI(t, "", nil, "replay", "topic", "--brokers", brokers, "--from-topic", "src", "--to-topic", "dst-all"); r.code != 0 || !strings.Contains(r.stderr, `"records":40`) {
		t.Fatalf("replay topic: %+v", r)
	}
	all := read("dst-all")
	if len(all) != 40 || all["v13"] != "k6/13" {
		t.Errorf("copied %d records, v13 → %q", len(all), all["v13"])
	}
	if r := runCLI(t, "", nil, "replay", "topic", "--brokers", brokers, "--from-topic", "src", "--to-topic", "dst-time", "--from-time", "2026-03-01T00:30:00Z"); r.code != 0 {
		t.Fatalf("replay topic --from-time: %+v", r)
	}
	since := read("dst-time")
	if len(since) != 10 || since["v30"] == "" || since["v29"] != "" {
		t.Errorf("from 00:30 copied %d records: %v", len(since), since)
	}
	if r := runCLI(t, "", nil, "replay", "topic", "--brokers", brokers, "--from-topic", "src", "--to-topic", "src"); r.code != exitUsage {
		t.Errorf("a topic into itself: %+v", r)
	}
}
