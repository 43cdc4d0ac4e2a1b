package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/sinks/crm/crmtest"
)

// Prometheus (Debian's prometheus package: promtool and the server), an
// implementation nobody here wrote, against every role: promtool lints each
// role's /metrics and deploy/prometheus.yml, and a real Prometheus scraping
// `run --demo` (with a CRM webhook sink) and the standalone roles evaluates
// every query of the Grafana dashboard without error; each panel whose
// metrics a running role exposes returns data.
func TestPrometheusScrapesEveryRole(t *testing.T) {
	promtool := peer(t, "promtool", "apt-get install prometheus")
	server := peer(t, "prometheus", "apt-get install prometheus")
	ctx := context.Background()

	if out, err := exec.CommandContext(ctx, promtool, "check", "config", "--syntax-only", filepath.Join("..", "..", "deploy", "prometheus.yml")).CombinedOutput(); err != nil {
		t.Errorf("promtool check config deploy/prometheus.yml: %v\n%s", err, out)
	}

	receiver := crmtest.NewWebhookServer("whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=", crmtest.Faults{})
	defer receiver.Close()
	demo := startRole(t, "run", "--demo", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--log-level", "warn", "--transactional-id", "prom-demo",
		"--partitions", "3", "--simulate-rate", "300", "--simulate-customers", "300", "--archive-roll-interval", "1s",
		"--crm-webhook-url", receiver.URL, "--crm-webhook-secret", "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=", "--crm-settle", "0s")

	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	b := strings.Join(emb.Brokers(), ",")
	roles := map[string]*role{"run --demo": demo}
	roles["ingest"] = startRole(t, "ingest", "--brokers", b, "--http", "127.0.0.1:0", "--log-level", "warn", "--partitions", "3")
	roles["process"] = startRole(t, "process", "--brokers", b, "--http", "127.0.0.1:0", "--log-level", "warn", "--transactional-id", "prom-process")
	roles["query"] = startRole(t, "query", "--brokers", b, "--http", "127.0.0.1:0", "--log-level", "warn")
	roles["sink parquet"] = startRole(t, "sink", "parquet", "--brokers", b, "--http", "127.0.0.1:0", "--log-level", "warn", "--archive-dir", t.TempDir())
	roles["sink crm"] = startRole(t, "sink", "crm", "--destination", "webhook", "--brokers", b, "--http", "127.0.0.1:0", "--log-level", "warn",
		"--crm-webhook-url", receiver.URL, "--crm-webhook-secret", "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=")
	postLines(t, roles["ingest"].url, testStream()[:500], 500)
	// A rejected line at ingest and a record the processors dead-letter,
	// so that the rejection panels have series.
	if code, _ := httpDo(t, "POST", demo.url+"/v1/events", "application/x-ndjson", []byte(`{"eventId":"x","type":"Pass:Installed"}`)); code != 422 && code != 200 {
		t.Errorf("a batch with a rejected line: %d", code)
	}
	cl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "prom-test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "wallet.events", Key: []byte("k"), Value: []byte("not an event")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // an archive roll, the DLQ record processed

	// promtool's linter on every role's exposition.
	exposed := map[string]bool{} // metric families with samples on some role
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? `)
	for name, r := range roles {
		_, body := httpDo(t, "GET", r.url+"/metrics", "", nil)
		cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(string(body))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on %s's /metrics: %v\n%s", name, err, out)
		}
		for _, l := range strings.Split(string(body), "\n") {
			if m := sample.FindStringSubmatch(l); m != nil {
				exposed[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m[1], "_bucket"), "_sum"), "_count")] = true
			}
		}
	}

	// A real server scraping every role once a second.
	var cfg strings.Builder
	// Every 2 s, so that the timeout (at most the interval) is 2 s: a scrape
	// of a role serving the read API measures the pipeline's lag then, a
	// dozen Kafka round trips, which under -race on a loaded 2-core
	// machine once took over 1 s, and the scrape failed.
	cfg.WriteString("global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\nscrape_configs:\n")
	for name, r := range roles {
		u, _ := url.Parse(r.url)
		fmt.Fprintf(&cfg, "  - job_name: %q\n    static_configs:\n      - targets: [%q]\n", strings.ReplaceAll(name, " ", "-"), u.Host)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prom := exec.CommandContext(pctx, server, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	var promLog syncBuffer
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = prom.Wait() }()
	query := func(expr string) (string, int, error) {
		resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var ans struct {
			Status string
			Error  string
			Data   struct{ Result []json.RawMessage }
		}
		if err := json.Unmarshal(b, &ans); err != nil {
			return "", 0, fmt.Errorf("%s: %w", b, err)
		}
		if ans.Status != "success" {
			return ans.Error, 0, fmt.Errorf("%s", ans.Error)
		}
		return string(b), len(ans.Data.Result), nil
	}
	// Every target up, and a few scrapes for rate() to have two samples.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, n, err := query(`up == 1`)
		if err == nil && n == len(roles) {
			break
		}
		if time.Now().After(deadline) {
			body, _, _ := query(`up`)
			t.Fatalf("Prometheus does not see every role up (%d of %d): %v %s\n%s", n, len(roles), err, body, promLog.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(7 * time.Second)

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	b2, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "walletsync.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b2, &dash); err != nil {
		t.Fatal(err)
	}
	metric := regexp.MustCompile(`walletsync_[a-z0-9_]+`)
	checked := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				continue
			}
			checked++
			body, n, err := query(tg.Expr)
			if err != nil {
				t.Errorf("panel %q: %s: %v", p.Title, tg.Expr, err)
				continue
			}
			name := metric.FindString(tg.Expr)
			family := strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum")
			switch {
			case exposed[family] && n == 0:
				t.Errorf("panel %q: %s returns no data although a role exposes %s: %s", p.Title, tg.Expr, family, body)
			case !exposed[family] && !strings.HasPrefix(family, "walletsync_clickhouse_") && family != "walletsync_backfill_observations_total":
				// The ClickHouse sink does not run here (it needs a
				// server), and the demo's backfill first runs at the next
				// minute; any other panel must name a metric that exists.
				t.Errorf("panel %q: %s names %s, which no running role exposes", p.Title, tg.Expr, family)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d panel queries found", checked)
	}
}
