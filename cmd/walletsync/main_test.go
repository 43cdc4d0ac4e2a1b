package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/chtest"
	chsink "github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/wire"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t testing.TB, stdin string, environ map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, env{
		stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb,
		getenv: func(k string) string { return environ[k] },
	})
	return result{code, out.String(), errb.String()}
}

func golden(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "..", "testdata", "golden", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFoldGoldenFiles(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "golden", "*.ndjson"))
	n := 0
	for _, in := range files {
		if strings.HasSuffix(in, ".expected.ndjson") {
			continue
		}
		n++
		r := runCLI(t, "", nil, "fold", in)
		if r.code != 0 {
			t.Fatalf("fold %s exited %d: %s", in, r.code, r.stderr)
		}
		want, _ := os.ReadFile(strings.TrimSuffix(in, ".ndjson") + ".expected.ndjson")
		if got := normalise(t, r.stdout); got != normalise(t, string(want)) {
			t.Errorf("fold %s:\n%s\nwant\n%s", in, got, normalise(t, string(want)))
		}
	}
	if n < 10 {
		t.Fatalf("only %d fixtures found", n)
	}
}

// normalise keeps the six fields of each status line, in line order.
func normalise(t *testing.T, ndjson string) string {
	t.Helper()
	return normaliseFields(t, ndjson, sixFields)
}

// sixFields are the customer and the status fields of round 1.
var sixFields = []string{"customerId", "walletStatus", "appleWalletInstalledAt", "googleWalletInstalledAt", "walletLastChangedAt", "walletLastEvent"}

// normaliseFields is a status NDJSON reduced to fields, each required.
func normaliseFields(t *testing.T, ndjson string, fields []string) string {
	t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(ndjson), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("bad line %q: %v", l, err)
		}
		for _, k := range fields {
			v, ok := m[k]
			if !ok {
				t.Fatalf("line %q lacks %s", l, k)
			}
			j, _ := json.Marshal(v)
			b.Write(j)
			b.WriteByte(' ')
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// The README's first command folds the bundled example; its output is
// pinned so the README stays true.
func TestFoldBundledExample(t *testing.T) {
	ex := filepath.Join("..", "..", "examples", "events.ndjson")
	r := runCLI(t, "", nil, "fold", ex)
	want, err := os.ReadFile(filepath.Join("..", "..", "examples", "events.expected.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 0 || r.stdout != string(want) {
		t.Errorf("fold %s = %d\n%s\nwant\n%s", ex, r.code, r.stdout, want)
	}
	if !strings.Contains(r.stderr, `"lines":12,"events":10,"duplicates":1,"rejected":1,"customers":5`) {
		t.Errorf("summary: %s", r.stderr)
	}
}

func TestFoldRejectsAndSummary(t *testing.T) {
	in := golden(t, "09-rejects.ndjson")
	r := runCLI(t, "", nil, "fold", in)
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 12 {
		t.Fatalf("stderr has %d lines, want 11 rejects and a summary:\n%s", len(lines), r.stderr)
	}
	var first struct {
		File  string `json:"file"`
		Line  int    `json:"line"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first.Line != 1 || first.File != in || !strings.HasPrefix(first.Error, "invalid JSON") {
		t.Errorf("first reject = %+v", first)
	}
	var x struct {
		Line  int    `json:"line"`
		Error string `json:"error"`
	}
	json.Unmarshal([]byte(lines[3]), &x)
	if x.Line != 4 || x.Error != `platform: must be "apple" or "google", got "samsung"` {
		t.Errorf("fourth reject = %+v", x)
	}
	var sum map[string]any
	if err := json.Unmarshal([]byte(lines[11]), &sum); err != nil {
		t.Fatalf("summary %q: %v", lines[11], err)
	}
	if sum["lines"] != 12.0 || sum["events"] != 1.0 || sum["rejected"] != 11.0 || sum["duplicates"] != 0.0 || sum["customers"] != 1.0 {
		t.Errorf("summary = %v", sum)
	}
}

func TestFoldStdinBlankLinesAndLongLines(t *testing.T) {
	in := "\n" + `{"eventId":"a","type":"installed","platform":"apple","customerId":"c","occurredAt":"2026-03-01T10:00:00Z"}` + "\r\n   \n" +
		`{"eventId":"b","type":"installed","platform":"google","customerId":"c","passId":"` + strings.Repeat("p", 300) + `","occurredAt":"2026-03-01T10:00:00Z"}` + "\n" +
		`{"eventId":"a","type":"uninstalled","platform":"apple","customerId":"c","occurredAt":"2026-03-02T10:00:00Z"}` // no final newline
	r := runCLI(t, in, nil, "fold", "--max-line", "200")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, `"walletStatus":"apple"`) {
		t.Errorf("stdout = %s", r.stdout)
	}
	if !strings.Contains(r.stderr, `{"line":4,"error":"line too long: over 200 bytes"}`) {
		t.Errorf("stderr = %s", r.stderr)
	}
	if !strings.Contains(r.stderr, `"lines":5,"events":1,"duplicates":1,"rejected":1`) {
		t.Errorf("summary wrong: %s", r.stderr)
	}
}

// Several files are one stream: the first occurrence of an id, in file
// order, wins.
func TestFoldSeveralFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.ndjson")
	b := filepath.Join(dir, "b.ndjson")
	os.WriteFile(a, []byte(`{"eventId":"x","type":"installed","platform":"apple","customerId":"c","occurredAt":"2026-03-01T10:00:00Z"}`+"\n"), 0o644)
	os.WriteFile(b, []byte(`{"eventId":"x","type":"uninstalled","platform":"apple","customerId":"c","occurredAt":"2026-03-02T10:00:00Z"}`+"\n"), 0o644)
	r := runCLI(t, "", nil, "fold", a, b)
	if r.code != 0 || !strings.Contains(r.stdout, `"walletStatus":"apple"`) || !strings.Contains(r.stderr, `"duplicates":1`) {
		t.Errorf("fold a b: %+v", r)
	}
	r = runCLI(t, "", nil, "fold", b, a)
	if r.code != 0 || !strings.Contains(r.stdout, `"walletStatus":"none"`) {
		t.Errorf("fold b a: %+v", r)
	}
}

func TestFoldMissingFile(t *testing.T) {
	r := runCLI(t, "", nil, "fold", filepath.Join(t.TempDir(), "nope.ndjson"))
	if r.code != exitFail || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing file: %+v", r)
	}
}

func TestHelp(t *testing.T) {
	r := runCLI(t, "", nil, "help")
	if r.code != 0 || !strings.Contains(r.stdout, "fold") || !strings.Contains(r.stdout, "WALLETSYNC_") {
		t.Errorf("help: %+v", r)
	}
	for _, args := range [][]string{{"help", "fold"}, {"fold", "-h"}} {
		r := runCLI(t, "", nil, args...)
		if r.code != 0 || strings.Count(r.stdout, "Usage: walletsync fold") != 1 || r.stderr != "" ||
			!strings.Contains(r.stdout, "--max-line bytes") || !strings.Contains(r.stdout, "env WALLETSYNC_MAX_LINE") {
			t.Errorf("%v: %+v", args, r)
		}
	}
	if r := runCLI(t, "", nil); r.code != exitUsage {
		t.Errorf("no command: exit %d", r.code)
	}
	if r := runCLI(t, "", nil, "frobnicate"); r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %+v", r)
	}
	if r := runCLI(t, "", nil, "fold", "--nope"); r.code != exitUsage || !strings.Contains(r.stderr, "flag provided but not defined") {
		t.Errorf("bad flag: %+v", r)
	}
	// Every role documents its flags with their environment variables.
	for role, flags := range map[string][]string{
		"run":     {"--data-dir directory", "--brokers brokers", "--webhook-secret secret", "--api-token", "--transactional-id", "env WALLETSYNC_PARTITIONS"},
		"ingest":  {"--customer-key", "--connector-api-key", "--produce-timeout", "--max-skew"},
		"process": {"--dedupe-window", "--group", "--transactional-id", "--checkpoint-every", "--checkpoint-events"},
		"query":   {"--api-token", "--http address"},
		"sink":    {"--clickhouse DSN", "--clickhouse-batch-rows", "--clickhouse-batch-interval", "--destination", "--crm-settle", "--hubspot-token", "--actito-api-key", "--crm-webhook-url URL"},
		"replay":  {"crm-dlq", "--destination", "--brokers"},
	} {
		r := runCLI(t, "", nil, "help", role)
		for _, f := range flags {
			if r.code != 0 || !strings.Contains(r.stdout, f) {
				t.Errorf("help %s lacks %q:\n%s", role, f, r.stdout)
			}
		}
	}
	if r := runCLI(t, "", nil, "sink", "kafka-connect"); r.code != exitUsage || !strings.Contains(r.stderr, "walletsync sink clickhouse") {
		t.Errorf("unknown sink: %+v", r)
	}
	if r := runCLI(t, "", nil, "sink", "crm"); r.code != exitUsage || !strings.Contains(r.stderr, "--destination is required") {
		t.Errorf("crm sink without a destination: %+v", r)
	}
	if r := runCLI(t, "", nil, "sink", "crm", "--destination", "hubspot", "--brokers", "127.0.0.1:1"); r.code != exitUsage || !strings.Contains(r.stderr, "--destination hubspot needs --hubspot-token") {
		t.Errorf("crm sink without its settings: %+v", r)
	}
	if r := runCLI(t, "", nil, "sink", "crm", "--destination", "salesforce", "--brokers", "127.0.0.1:1"); r.code != exitUsage || !strings.Contains(r.stderr, "want webhook, actito or hubspot") {
		t.Errorf("crm sink with an unknown destination: %+v", r)
	}
	if r := runCLI(t, "", nil, "process"); r.code != exitUsage || !strings.Contains(r.stderr, "--brokers is required") {
		t.Errorf("process without brokers: %+v", r)
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	long := `{"eventId":"a","type":"installed","platform":"apple","customerId":"c","occurredAt":"2026-03-01T10:00:00Z"}`
	r := runCLI(t, long, map[string]string{"WALLETSYNC_MAX_LINE": "20"}, "fold")
	if !strings.Contains(r.stderr, "line too long: over 20 bytes") {
		t.Errorf("env flag not applied: %+v", r)
	}
	// The command line wins over the environment.
	r = runCLI(t, long, map[string]string{"WALLETSYNC_MAX_LINE": "20"}, "fold", "--max-line", "1000")
	if !strings.Contains(r.stderr, `"events":1`) {
		t.Errorf("flag did not win over env: %+v", r)
	}
	r = runCLI(t, long, map[string]string{"WALLETSYNC_MAX_LINE": "lots"}, "fold")
	if r.code != exitUsage || !strings.Contains(r.stderr, "WALLETSYNC_MAX_LINE") {
		t.Errorf("bad env value: %+v", r)
	}
}

func TestMigrateCommand(t *testing.T) {
	srv := chtest.Start(t)
	r := runCLI(t, "", nil, "migrate", "--clickhouse", srv.DSN())
	if r.code != 0 || !strings.Contains(r.stdout, "applied 001_wallet_events") {
		t.Fatalf("first migrate: %+v", r)
	}
	r = runCLI(t, "", map[string]string{"WALLETSYNC_CLICKHOUSE": srv.DSN()}, "migrate")
	if r.code != 0 || r.stdout != "schema up to date\n" {
		t.Fatalf("second migrate: %+v", r)
	}
	if r := runCLI(t, "", nil, "migrate"); r.code != exitUsage {
		t.Errorf("no DSN: %+v", r)
	}
	if r := runCLI(t, "", nil, "migrate", "--clickhouse", "clickhouse://127.0.0.1:1/x"); r.code != exitFail {
		t.Errorf("unreachable server: %+v", r)
	}
}

func TestQueryInsightCommand(t *testing.T) {
	srv := chtest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	if _, err := chsink.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	var evs []walletsync.Event
	for _, l := range []string{
		`{"eventId":"a","type":"installed","platform":"apple","customerId":"c1","occurredAt":"2026-03-02T10:00:00Z","source":"webhook"}`,
		`{"eventId":"b","type":"installed","platform":"google","customerId":"c2","occurredAt":"2026-03-02T23:59:59.999Z","source":"connector"}`,
		`{"eventId":"c","type":"uninstalled","platform":"apple","customerId":"c1","occurredAt":"2026-03-03T00:00:00Z","source":"webhook"}`,
		// A device removal: counted apart, and c2's pass stays installed.
		`{"eventId":"d","type":"uninstalled","platform":"google","customerId":"c2","occurredAt":"2026-03-03T08:00:00Z","source":"connector","registration":{"activeCount":1,"totalCount":2}}`,
		// Issued passes for the funnel: c1's installed 10 h later (a),
		// c2's (no passType, no platform) 2 days later (b), c3's never.
		`{"eventId":"i1","type":"issued","customerId":"c1","passType":"loyalty","occurredAt":"2026-03-02T00:00:00Z"}`,
		`{"eventId":"i2","type":"issued","customerId":"c2","occurredAt":"2026-02-28T23:59:59.999Z"}`,
		`{"eventId":"i3","type":"issued","platform":"apple","customerId":"c3","passType":"loyalty","occurredAt":"2026-03-03T12:00:00Z"}`,
	} {
		e, err := wire.ParseEvent([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	if err := chsink.InsertEvents(ctx, conn, evs, nil); err != nil {
		t.Fatal(err)
	}
	dsn := srv.DSN()
	r := runCLI(t, "", nil, "query", "daily", "--from", "2026-03-02", "--to", "2026-03-04", "--by", "source", "--format", "csv", "--clickhouse", dsn)
	want := "day,platform,source,installs,uninstalls,net,deviceRemovals\n" +
		"2026-03-02,apple,connector,0,0,0,0\n2026-03-02,apple,webhook,1,0,1,0\n" +
		"2026-03-02,google,connector,1,0,1,0\n2026-03-02,google,webhook,0,0,0,0\n" +
		"2026-03-03,apple,connector,0,0,0,0\n2026-03-03,apple,webhook,0,1,-1,0\n" +
		"2026-03-03,google,connector,0,0,0,1\n2026-03-03,google,webhook,0,0,0,0\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("daily csv: %d\n%s\nwant\n%s%s", r.code, r.stdout, want, r.stderr)
	}
	r = runCLI(t, "", nil, "query", "installed-base", "--from", "2026-03-02", "--to", "2026-03-04", "--clickhouse", dsn)
	var table []string
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		table = append(table, strings.Join(strings.Fields(l), " "))
	}
	wantTable := "day platform installed|2026-03-02 apple 1|2026-03-02 google 1|2026-03-03 apple 0|2026-03-03 google 1"
	if r.code != 0 || strings.Join(table, "|") != wantTable {
		t.Fatalf("installed-base table:\n%s%s", r.stdout, r.stderr)
	}
	r = runCLI(t, "", nil, "query", "retention", "--from", "2026-03-02", "--to", "2026-03-04", "--format", "json", "--clickhouse", dsn)
	if r.code != 0 || !strings.Contains(r.stdout, `"cohortWeek": "2026-03-02"`) || !strings.Contains(r.stdout, `"after1d": 0`) {
		t.Fatalf("retention json:\n%s%s", r.stdout, r.stderr)
	}
	r = runCLI(t, "", nil, "query", "funnel", "--from", "2026-02-28", "--to", "2026-03-04", "--format", "csv", "--clickhouse", dsn)
	want = "cohortWeek,passType,issued,within1d,within7d,within30d\n" +
		"2026-02-23,,1,0,1,1\n2026-03-02,loyalty,2,1,1,1\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("funnel csv: %d\n%s\nwant\n%s%s", r.code, r.stdout, want, r.stderr)
	}
	for _, args := range [][]string{
		{"query", "daily", "--from", "2026-03-04", "--to", "2026-03-02", "--clickhouse", dsn},
		{"query", "weekly", "--from", "2026-03-02", "--to", "2026-03-04", "--clickhouse", dsn},
		{"query", "daily", "--from", "2026-03-02", "--to", "2026-03-04", "--format", "xml", "--clickhouse", dsn},
		{"query", "daily", "--from", "2026-03-02", "--to", "2026-03-04"},
		{"query", "funnel", "--from", "2026-03-02", "--to", "2026-03-04", "--by", "passType", "--clickhouse", dsn},
	} {
		if r := runCLI(t, "", nil, args...); r.code != exitUsage || r.stderr == "" {
			t.Errorf("%v: %+v", args, r)
		}
	}
	if r := runCLI(t, "", nil, "query", "status", "--from", "2026-03-02", "--to", "2026-03-04", "--clickhouse", "clickhouse://127.0.0.1:1/x"); r.code != exitFail {
		t.Errorf("unreachable store: %+v", r)
	}
}

// walletsync bench names a suite that does not exist as bad usage (the
// table and the suite's selection are tested in internal/bench).
func TestBenchRejectsUnknownSuites(t *testing.T) {
	if r := runCLI(t, "", nil, "bench", "--only", "nosuch"); r.code != exitUsage || !strings.Contains(r.stderr, "unknown suites") {
		t.Errorf("bench --only nosuch: %+v", r)
	}
}

// A flag whose value is wrong is a usage error (2); the process never
// starts its components.
func TestBadFlagValuesAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"process", "--brokers", "127.0.0.1:1", "--checkpoint-every", "0s", "--http", "127.0.0.1:0"},
		{"sink", "crm", "--destination", "webhook", "--brokers", "127.0.0.1:1", "--crm-webhook-url", "http://127.0.0.1:1/", "--crm-webhook-secret", "@/nonexistent/secret", "--http", "127.0.0.1:0"},
	} {
		if r := runCLI(t, "", nil, args...); r.code != exitUsage || !strings.Contains(r.stderr, "--") {
			t.Errorf("%v: exit %d, want %d: %s", args, r.code, exitUsage, r.stderr)
		}
	}
}
