package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/walletsync/walletsync/internal/chtest"
	"github.com/walletsync/walletsync/internal/kafka"
)

// sqlExamples are the ```sql blocks of the README and docs/, one statement
// each, with the comment line above it.
func sqlExamples(t *testing.T) []string {
	t.Helper()
	files := []string{filepath.Join("..", "..", "README.md")}
	docs, _ := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	files = append(files, docs...)
	block := regexp.MustCompile("(?s)```sql\n(.*?)```")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range block.FindAllSubmatch(b, -1) {
			for _, st := range strings.Split(string(m[1]), ";") {
				if strings.TrimSpace(stripComments(st)) != "" {
					out = append(out, strings.TrimSpace(st))
				}
			}
		}
	}
	return out
}

func stripComments(sql string) string {
	var b strings.Builder
	for _, l := range strings.Split(sql, "\n") {
		if i := strings.Index(l, "--"); i >= 0 {
			l = l[:i]
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// Every analyst SQL example of the docs runs, through Debian's
// clickhouse-client (not our driver), against a server the pipeline
// populated, and returns rows.
func TestAnalystSQLExamplesReturnRows(t *testing.T) {
	client := peer(t, "clickhouse-client", "apt-get install clickhouse-client")
	examples := sqlExamples(t)
	if len(examples) < 4 {
		t.Fatalf("found %d SQL examples", len(examples))
	}
	ch := chtest.Start(t)
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	r := startRole(t, "run", "--brokers", strings.Join(emb.Brokers(), ","), "--partitions", "3", "--http", "127.0.0.1:0", "--archive-dir", "none",
		"--log-level", "warn", "--transactional-id", "analyst-sql", "--clickhouse", ch.DSN(), "--clickhouse-batch-interval", "100ms")
	// The examples' own data: March 2026, a medium, anna@example.com (her
	// pass issued, for the funnel example, and a device removal).
	lines := append(testStream()[:1500],
		[]byte(`{"eventId":"anna-0","type":"issued","customerId":"anna@example.com","passType":"loyalty","occurredAt":"2026-03-01T08:00:00Z"}`),
		[]byte(`{"eventId":"anna-1","type":"installed","platform":"apple","customerId":"anna@example.com","occurredAt":"2026-03-01T09:15:02.120Z","registration":{"medium":"email"}}`),
		[]byte(`{"eventId":"anna-2","type":"installed","platform":"google","customerId":"anna@example.com","occurredAt":"2026-03-03T07:00:00Z","registration":{"medium":"sms"}}`),
		[]byte(`{"eventId":"anna-3","type":"uninstalled","platform":"apple","customerId":"anna@example.com","occurredAt":"2026-03-09T07:00:00Z"}`),
		[]byte(`{"eventId":"anna-4","type":"uninstalled","platform":"google","customerId":"anna@example.com","occurredAt":"2026-03-10T07:00:00Z","registration":{"activeCount":1,"totalCount":2}}`),
	)
	postLines(t, r.url, lines, 500)
	waitCaughtUp(t, r.url)
	host, port, _ := net.SplitHostPort(ch.Addr)
	for _, sql := range examples {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, client, "--host", host, "--port", port, "--multiline", "--query", sql)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Errorf("clickhouse-client failed on\n%s\n%v: %s", sql, err, errb.String())
			continue
		}
		if strings.TrimSpace(out.String()) == "" {
			t.Errorf("no rows from\n%s", sql)
		}
	}
}
