package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/walletsync/walletsync/ingest/passapi"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/peers/passapidoc"
)

// "walletsync backfill --once" prints its run's reconciliation report as a
// table after the JSON summary line.
func TestBackfillOncePrintsTheReport(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	if id := backfillOnce(t, strings.Join(emb.Brokers(), ",")).RunID; id == "" {
		t.Error("no run id")
	}
}

// backfillOnce runs "walletsync backfill --once" against a documented Pass
// API listing three passes the pipeline never heard of (one of them naming
// no customer) and checks what it prints: the JSON line, then the table.
func backfillOnce(t *testing.T, brokers string) passapi.RunReport {
	t.Helper()
	at := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	doc := passapidoc.New("brand", "k", []passapidoc.Pass{
		{ID: "dash-p1", Identifiers: map[string]string{"customerId": "dash-bf-1"}, Providers: map[string]*time.Time{passapidoc.ProviderApple: &at}},
		{ID: "dash-p2", Identifiers: map[string]string{"customerId": "dash-bf-2"}},
		{ID: "dash-p3", Identifiers: map[string]string{"email": "x@example.com"}},
	})
	url, stop := doc.Start()
	defer stop()
	res := runCLI(t, "", nil, "backfill", "--once", "--brokers", brokers, "--passapi-url", url, "--passapi-tenant", "brand", "--passapi-key", "k",
		"--passapi-rate", "1000", "--log-level", "warn")
	if res.code != 0 {
		t.Fatalf("backfill --once: %d %s %s", res.code, res.stdout, res.stderr)
	}
	first, table, _ := strings.Cut(res.stdout, "\n")
	var sum struct{ RunID string }
	if err := json.Unmarshal([]byte(first), &sum); err != nil || sum.RunID == "" {
		t.Fatalf("backfill --once's first line: %q (%v)", first, err)
	}
	for _, re := range []string{`(?m)^backfill run ` + sum.RunID + `: done$`, `(?m)^scanned +3$`, `(?m)^agreeing +0$`,
		`(?m)^skipped \(no customer\) +1$`, `(?m)^unknown pass +2 +"dash-bf-1" "dash-bf-2"$`, `(?m)^missed install +0$`, `(?m)^identity changed +0$`} {
		if !regexp.MustCompile(re).MatchString(table) {
			t.Errorf("the table lacks %s:\n%s", re, table)
		}
	}
	return passapi.RunReport{RunID: sum.RunID}
}
