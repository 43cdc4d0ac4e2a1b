package parquet_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	readapi "github.com/walletsync/walletsync/api"
	"github.com/walletsync/walletsync/queries"
	"github.com/walletsync/walletsync/queries/embedded"
	"github.com/walletsync/walletsync/sinks/parquet"
)

// The DuckDB peer: internal/peers/node/duckdb-query.mjs runs SQL with
// DuckDB (npm @duckdb/node-api) over the archive, an implementation of
// Parquet, of the archive's layout and of SPEC §7 that shares no code
// with walletsync. Its queries are the ones an analyst runs (the folder's
// README shows them, and this test holds it to that).

// duckdbPeer finds node and the peer folder. Without them the test skips,
// except under CI=true, where it fails: CI must install them.
func duckdbPeer(t *testing.T) (node, peer string) {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the package directory")
		}
		dir = parent
	}
	peer = filepath.Join(dir, "internal", "peers", "node")
	var msg string
	if node, err = exec.LookPath("node"); err != nil {
		msg = "node is not on PATH: install Node 20 or later, then `cd internal/peers/node && npm ci`"
	} else if _, err := os.Stat(filepath.Join(peer, "node_modules", "@duckdb", "node-api", "package.json")); err != nil {
		msg = "internal/peers/node/node_modules is not installed: `cd internal/peers/node && npm ci`"
	}
	if msg != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node, peer
}

// duckdbQuery runs sqlOrFile (a .sql file under the peer folder, or SQL) over
// the archive with the TZ zone and DuckDB variables vars (name=value), and
// returns the rows, numbers as json.Number.
func duckdbQuery(t *testing.T, node, peer, archive, sqlOrFile, zone string, vars ...string) []map[string]any {
	t.Helper()
	if strings.HasSuffix(sqlOrFile, ".sql") {
		sqlOrFile = filepath.Join(peer, sqlOrFile)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join(peer, "duckdb-query.mjs"), archive, sqlOrFile}, vars...)...)
	cmd.Dir = peer
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TZ=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TZ="+zone)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("duckdb-query.mjs %s (TZ=%s): %v\n%s", filepath.Base(sqlOrFile), zone, err, stderr.String())
	}
	var rows []map[string]any
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		d := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		d.UseNumber()
		var row map[string]any
		if err := d.Decode(&row); err != nil {
			t.Fatalf("duckdb-query.mjs printed %q: %v", sc.Text(), err)
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// insight asks walletsync's read API, served by the embedded engine over
// the archive, for an insight; rows with numbers as json.Number.
func insight(t *testing.T, api *httptest.Server, name, from, to string) []map[string]any {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("%s/v1/insights/%s?from=%s&to=%s", api.URL, name, from, to))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/insights/%s: %s %s", name, resp.Status, body)
	}
	var ans struct {
		Query, From, To string
		Rows            []map[string]any
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&ans); err != nil {
		t.Fatalf("GET /v1/insights/%s: %v in %s", name, err, body)
	}
	if ans.Query != name || ans.From != from || ans.To != to {
		t.Fatalf("GET /v1/insights/%s?from=%s&to=%s answered query %q from %q to %q", name, from, to, ans.Query, ans.From, ans.To)
	}
	return ans.Rows
}

// sameRows demands rows equal, in order: got from gotBy, want from wantBy.
func sameRows(t *testing.T, what, gotBy string, got []map[string]any, wantBy string, want []map[string]any) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	shown := 0
	for i := range max(len(got), len(want)) {
		var g, w map[string]any
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if !reflect.DeepEqual(g, w) && shown < 10 {
			t.Errorf("%s row %d: %s %v, %s %v", what, i, gotBy, g, wantBy, w)
			shown++
		}
	}
	t.Errorf("%s: %s gave %d rows, %s %d, and they differ", what, gotBy, len(got), wantBy, len(want))
}

// duckdbStream is the archive tests' stream (300 customers over four days:
// installs, uninstalls, backfill observations, late deliveries) with some
// events moved onto the edges of a UTC day, exactly midnight and the last
// millisecond before it, where a reader that takes local days or rounds
// times counts them on the wrong day.
func duckdbStream() []walletsync.Event {
	const dayMs = 86_400_000
	evs := stream(4000, 7)
	for i := range evs {
		e := &evs[i]
		if e.Type == walletsync.TypeObserved {
			continue
		}
		midnight := e.OccurredAt - e.OccurredAt%dayMs
		switch i % 41 {
		case 0:
			e.OccurredAt = midnight
		case 1:
			e.OccurredAt = midnight - 1
		}
	}
	return evs
}

// plantCrashLeftovers leaves what a crash mid-roll leaves and what readers
// must ignore: a temp file, and one file of a two-file range holding real
// rows (a copy of the largest archived file), which would count them twice.
func plantCrashLeftovers(t *testing.T, dir string) {
	t.Helper()
	files, err := parquet.Files(dir, parquet.EventsDataset)
	if err != nil {
		t.Fatal(err)
	}
	var src string
	var size int64
	for _, paths := range files {
		for _, p := range paths {
			if st, err := os.Stat(p); err == nil && st.Size() > size {
				src, size = p, st.Size()
			}
		}
	}
	if src == "" {
		t.Fatal("no archived file")
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var part int32
	var first, last int64
	var k, n int
	if _, err := fmt.Sscanf(filepath.Base(src), "p%d-%d-%d-%dof%d.parquet", &part, &first, &last, &k, &n); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	// The same offsets as a range that a crash cut short: 1 of n+1 files.
	d := filepath.Dir(src)
	if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("p%d-%d-%d-1of%d.parquet", part, first, last, n+1)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, ".tmp-"+filepath.Base(src)), []byte("half a roll"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The archive's columns as DuckDB reads them (hive_partitioning adds day).
var duckdbSchema = map[string]map[string]string{
	"events": {
		"event_id": "VARCHAR", "type": "VARCHAR", "platform": "VARCHAR", "customer_id": "VARCHAR", "pass_id": "VARCHAR",
		"pass_type": "VARCHAR", "occurred_at": "TIMESTAMP WITH TIME ZONE", "installed": "BOOLEAN",
		"installed_at": "TIMESTAMP WITH TIME ZONE", "source": "VARCHAR", "has_registration": "BOOLEAN", "medium": "VARCHAR",
		"origin": "VARCHAR", "user_agent": "VARCHAR", "tags": "VARCHAR[]", "registration_active_count": "BIGINT",
		"registration_total_count": "BIGINT", "kafka_partition": "INTEGER", "kafka_offset": "BIGINT", "day": "DATE",
	},
	"status": {
		"customer_id": "VARCHAR", "version": "BIGINT", "wallet_status": "VARCHAR",
		"apple_wallet_installed_at": "TIMESTAMP WITH TIME ZONE", "google_wallet_installed_at": "TIMESTAMP WITH TIME ZONE",
		"wallet_last_changed_at": "TIMESTAMP WITH TIME ZONE", "wallet_last_event": "VARCHAR", "kafka_partition": "INTEGER",
		"kafka_offset": "BIGINT", "day": "DATE",
		"first_installed_at": "TIMESTAMP WITH TIME ZONE", "pass_issued_at": "TIMESTAMP WITH TIME ZONE",
	},
}

// DuckDB, reading the archive the real archiver wrote from a realistic
// stream, computes SPEC §7's daily, status and funnel answers equal to walletsync's
// embedded engine behind GET /v1/insights, in time zones on both sides of
// UTC, and finds every event once, on the day directory of its UTC day.
func TestDuckDBAgreesWithTheEmbeddedEngine(t *testing.T) {
	node, peer := duckdbPeer(t)

	f := newFixture(t)
	dir := t.TempDir()
	stop := f.run(dir)
	evs := duckdbStream()
	f.write(evs)
	f.waitArchived()
	stop()
	plantCrashLeftovers(t, dir)
	f.check(dir)

	minDay, maxDay := parquet.Day(evs[0].OccurredAt), parquet.Day(evs[0].OccurredAt)
	for _, e := range evs {
		minDay, maxDay = min(minDay, parquet.Day(e.OccurredAt)), max(maxDay, parquet.Day(e.OccurredAt))
	}
	dayAfter := func(d string, n int) string {
		tm, err := time.Parse(time.DateOnly, d)
		if err != nil {
			t.Fatal(err)
		}
		return tm.AddDate(0, 0, n).Format(time.DateOnly)
	}
	// A day with no event on either side of the data: zero rows too.
	from, to := dayAfter(minDay, -1), dayAfter(maxDay, 2)

	mux := http.NewServeMux()
	(&readapi.API{Insights: embedded.New(dir)}).Handle(mux)
	api := httptest.NewServer(mux)
	defer api.Close()
	wantDaily := insight(t, api, queries.Daily, from, to)
	wantStatus := insight(t, api, queries.StatusMix, from, to)
	wantFunnel := insight(t, api, queries.Funnel, from, to)

	// The stream must make the comparison mean something.
	var installs, uninstalls, removals int64
	for _, r := range wantDaily {
		i, _ := r["installs"].(json.Number).Int64()
		u, _ := r["uninstalls"].(json.Number).Int64()
		d, _ := r["deviceRemovals"].(json.Number).Int64()
		installs, uninstalls, removals = installs+i, uninstalls+u, removals+d
	}
	if installs < 1000 || uninstalls < 500 || removals < 50 {
		t.Fatalf("the stream is too thin: %d installs, %d uninstalls, %d device removals", installs, uninstalls, removals)
	}
	// The stream moves events by whole days, so issues and installs fall
	// in every order: passes installed within a day, later, and never.
	var issued, within1, within30 int64
	for _, r := range wantFunnel {
		n, _ := r["issued"].(json.Number).Int64()
		w1, _ := r["within1d"].(json.Number).Int64()
		w30, _ := r["within30d"].(json.Number).Int64()
		issued, within1, within30 = issued+n, within1+w1, within30+w30
	}
	if issued < 100 || within1 == 0 || within1 == within30 || within30 == issued {
		t.Fatalf("the stream is too thin for the funnel: %d issued, %d within a day, %d within 30 days", issued, within1, within30)
	}

	// The fold's own statuses give the same mix.
	mix := map[string]int64{}
	for _, st := range f.status {
		mix[st.Wallet.String()]++
	}
	var foldStatus []map[string]any
	for _, w := range []string{"none", "apple", "google", "both"} {
		if mix[w] == 0 {
			t.Errorf("no customer ends with walletStatus %s: the stream is too thin", w)
		}
		foldStatus = append(foldStatus, map[string]any{"walletStatus": w, "customers": json.Number(fmt.Sprint(mix[w]))})
	}
	sameRows(t, "status", "the embedded engine", wantStatus, "the fold", foldStatus)

	// Los Angeles puts the early hours of a UTC day on the day before,
	// Kiritimati (UTC+14) the last hours on the day after.
	for _, zone := range []string{"America/Los_Angeles", "Pacific/Kiritimati"} {
		vars := []string{"from_day=" + from, "to_day=" + to}
		sameRows(t, "daily (TZ="+zone+")", "DuckDB", duckdbQuery(t, node, peer, dir, "sql/daily.sql", zone, vars...), "walletsync", wantDaily)
		sameRows(t, "status (TZ="+zone+")", "DuckDB", duckdbQuery(t, node, peer, dir, "sql/status-mix.sql", zone, vars...), "walletsync", wantStatus)
		sameRows(t, "funnel (TZ="+zone+")", "DuckDB", duckdbQuery(t, node, peer, dir, "sql/funnel.sql", zone, vars...), "walletsync", wantFunnel)
	}

	// What DuckDB infers for the archive's columns, and the script's
	// stand-in for a dataset with no file yet.
	for _, archive := range []string{dir, t.TempDir()} {
		for dataset, want := range duckdbSchema {
			got := map[string]string{}
			for _, r := range duckdbQuery(t, node, peer, archive, "DESCRIBE "+dataset, "UTC") {
				got[r["column_name"].(string)] = r["column_type"].(string)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("DuckDB reads %s of %s as %v, want %v", dataset, archive, got, want)
			}
		}
	}

	// Every event once, every status version once, each on the day
	// directory of its UTC day.
	versions := 0
	for _, st := range f.status {
		versions += int(st.Version)
	}
	counts := duckdbQuery(t, node, peer, dir, `SELECT
		(SELECT count(*) FROM events) AS events,
		(SELECT count(DISTINCT event_id) FROM events) AS event_ids,
		(SELECT count(*) FROM events WHERE day <> (occurred_at AT TIME ZONE 'UTC')::DATE) AS misfiled_events,
		(SELECT count(*) FROM status) AS statuses,
		(SELECT count(DISTINCT (customer_id, version)) FROM status) AS status_versions,
		(SELECT count(*) FROM status WHERE day <> (wallet_last_changed_at AT TIME ZONE 'UTC')::DATE) AS misfiled_statuses`, "Asia/Tokyo")
	n := json.Number(fmt.Sprint(len(evs)))
	v := json.Number(fmt.Sprint(versions))
	sameRows(t, "archive counts", "DuckDB", counts, "the stream", []map[string]any{{"events": n, "event_ids": n, "misfiled_events": json.Number("0"),
		"statuses": v, "status_versions": v, "misfiled_statuses": json.Number("0")}})

	// The README shows the queries this test runs.
	readme, err := os.ReadFile(filepath.Join(peer, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"daily.sql", "status-mix.sql", "funnel.sql"} {
		q, err := os.ReadFile(filepath.Join(peer, "sql", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(readme, bytes.TrimSpace(q)) {
			t.Errorf("internal/peers/node/README.md does not show sql/%s as it is", name)
		}
	}
}
