package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/walletsync/walletsync/ingest/passapi"
)

// chromium finds Debian's Chromium; under CI=true its absence fails the
// test, elsewhere it skips with how to install it.
func chromium(t *testing.T) string {
	for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium for the dashboard's browser test (apt-get install chromium)")
	}
	t.Skip("no Chromium: apt-get install chromium to run the dashboard's browser test")
	return ""
}

// The dashboard, loaded in headless Chromium against `walletsync run --demo`,
// draws the numbers the API returns: with issued passes and device removals
// posted beside the simulation (which sends neither), the funnel panel
// shows the funnel's rows and the daily chart its device removals.
func TestDashboardShowsTheAPIsNumbers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser; skipped with -short")
	}
	browser := chromium(t)
	kafkaAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRole(t, "run", "--demo", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--log-level", "warn", "--partitions", "3",
		"--simulate-duration", "3s", "--simulate-rate", "300", "--simulate-customers", "300", "--archive-roll-interval", "300ms",
		"--kafka-listen", kafkaAddr)
	time.Sleep(3500 * time.Millisecond) // the simulation's 3 s
	postLines(t, r.url, lifecycleLines(time.Now().UTC().Add(-10*24*time.Hour).Truncate(time.Hour)), 100)
	waitCaughtUp(t, r.url)
	// A backfill run of its own, against the documented Pass API, so that
	// the backfill panel has a known run whatever the demo's schedule did.
	myRun := backfillOnce(t, kafkaAddr).RunID

	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU)...)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	var from, to, installs, uninstalls, removals, legend, errText string
	var polylines int
	var statuses map[string]string
	var retentionRows int
	var funnelRows []map[string]string
	var funnelTotal string
	var runRows []map[string]string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(r.url+"/"),
		chromedp.WaitVisible(`body[data-ready]`, chromedp.ByQuery),
		chromedp.Value(`#from`, &from, chromedp.ByID),
		chromedp.Value(`#to`, &to, chromedp.ByID),
		chromedp.AttributeValue(`#daily-chart`, "data-installs", &installs, nil, chromedp.ByID),
		chromedp.AttributeValue(`#daily-chart`, "data-uninstalls", &uninstalls, nil, chromedp.ByID),
		chromedp.AttributeValue(`#daily-chart`, "data-device-removals", &removals, nil, chromedp.ByID),
		chromedp.Text(`#daily-legend`, &legend, chromedp.ByID),
		chromedp.Evaluate(`document.querySelectorAll("#daily-chart polyline").length`, &polylines),
		chromedp.Evaluate(`Object.fromEntries([...document.querySelectorAll("#status-mix .bar")].map(b => [b.dataset.status, b.dataset.customers]))`, &statuses),
		chromedp.Evaluate(`document.querySelectorAll("#retention tr[data-week]").length`, &retentionRows),
		chromedp.Evaluate(`[...document.querySelectorAll("#funnel tr[data-week]")].map(r => ({cohortWeek: r.dataset.week, passType: r.dataset.passType,
			issued: r.dataset.issued, within1d: r.dataset.within1d, within7d: r.dataset.within7d, within30d: r.dataset.within30d}))`, &funnelRows),
		chromedp.Evaluate(`(document.querySelector("#funnel tr.total") || {dataset: {}}).dataset.issued || ""`, &funnelTotal),
		chromedp.Evaluate(`[...document.querySelectorAll("#backfill-runs tr[data-run-id]")].map(r => ({...r.dataset}))`, &runRows),
		chromedp.Evaluate(`document.getElementById("error").hidden ? "" : document.getElementById("error").textContent`, &errText),
	); err != nil {
		t.Fatal(err)
	}
	if errText != "" {
		t.Fatalf("the dashboard shows an error: %s", errText)
	}
	q := "?from=" + from + "&to=" + to
	var daily struct {
		Rows []struct{ Installs, Uninstalls, DeviceRemovals int }
	}
	_, body := httpDo(t, "GET", r.url+"/v1/insights/daily"+q, "", nil)
	if err := json.Unmarshal(body, &daily); err != nil {
		t.Fatal(err)
	}
	in, un, rm := 0, 0, 0
	for _, row := range daily.Rows {
		in, un, rm = in+row.Installs, un+row.Uninstalls, rm+row.DeviceRemovals
	}
	if in == 0 || installs != strconv.Itoa(in) || uninstalls != strconv.Itoa(un) {
		t.Errorf("daily chart: %s installs, %s uninstalls; the API: %d, %d", installs, uninstalls, in, un)
	}
	if rm < 2 || removals != strconv.Itoa(rm) || !strings.Contains(legend, "device removals ("+strconv.Itoa(rm)+")") {
		t.Errorf("daily chart: %s device removals, legend %q; the API: %d (at least the 2 posted)", removals, legend, rm)
	}
	if polylines != 5 { // apple and google installs and uninstalls, device removals
		t.Errorf("the daily chart has %d series, want 5", polylines)
	}
	var mix struct {
		Rows []struct {
			WalletStatus string
			Customers    int
		}
	}
	_, body = httpDo(t, "GET", r.url+"/v1/insights/status"+q, "", nil)
	if err := json.Unmarshal(body, &mix); err != nil {
		t.Fatal(err)
	}
	for _, row := range mix.Rows {
		if statuses[row.WalletStatus] != strconv.Itoa(row.Customers) {
			t.Errorf("status mix %s: the page shows %q, the API %d", row.WalletStatus, statuses[row.WalletStatus], row.Customers)
		}
	}
	var ret struct{ Rows []any }
	_, body = httpDo(t, "GET", r.url+"/v1/insights/retention"+q, "", nil)
	if err := json.Unmarshal(body, &ret); err != nil || len(ret.Rows) != retentionRows || retentionRows == 0 {
		t.Errorf("retention: %d rows on the page, %d from the API (%v)", retentionRows, len(ret.Rows), err)
	}
	// The funnel panel: the API's rows, in its order, and their total.
	var funnel struct{ Rows []map[string]any }
	_, body = httpDo(t, "GET", r.url+"/v1/insights/funnel"+q, "", nil)
	if err := json.Unmarshal(body, &funnel); err != nil {
		t.Fatal(err)
	}
	var want []map[string]string
	issued := 0
	for _, row := range funnel.Rows {
		w := map[string]string{}
		for k, v := range row {
			w[k] = fmt.Sprint(v)
		}
		want = append(want, w)
		issued += int(row["issued"].(float64))
	}
	if issued < 4 || !reflect.DeepEqual(funnelRows, want) || funnelTotal != strconv.Itoa(issued) {
		t.Errorf("funnel: the page shows %v (total %q), the API %v (at least the 4 passes posted)", funnelRows, funnelTotal, want)
	}
	// The backfill panel: each run's counts as the API gives them (the
	// demo's own runs may come and go meanwhile; ours is done, so fixed).
	var runs struct{ Runs []passapi.RunReport }
	_, body = httpDo(t, "GET", r.url+"/v1/backfill/runs?limit=10", "", nil)
	if err := json.Unmarshal(body, &runs); err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, row := range runRows {
		for _, run := range runs.Runs {
			if run.RunID != row["runId"] || !run.Done {
				continue
			}
			want := map[string]string{"runId": run.RunID, "passes": strconv.Itoa(run.Passes), "agreeing": strconv.Itoa(run.Agreeing), "skipped": strconv.Itoa(run.Skipped)}
			for _, k := range passapi.Kinds {
				want[strings.ToLower(k)] = strconv.Itoa(run.Drift.Of(k))
			}
			if !reflect.DeepEqual(row, want) {
				t.Errorf("backfill panel: the page shows %v, the API %v", row, want)
			}
			seen = seen || run.RunID == myRun
		}
	}
	if !seen {
		t.Errorf("backfill panel: run %s is not shown (rows %v, API %+v)", myRun, runRows, runs.Runs)
	}
}

// lifecycleLines are canonical events from base on that the simulation
// does not send: four passes issued (two loyalty, one coupon, one with no
// passType or platform), three of them installed (within an hour, three
// days and ten minutes), and two device removals.
func lifecycleLines(base time.Time) [][]byte {
	at := func(d time.Duration) string { return base.Add(d).Format("2006-01-02T15:04:05.000Z") }
	var out [][]byte
	for _, l := range []string{
		`{"eventId":"dash-a-is","type":"issued","customerId":"dash-a","passType":"loyalty","occurredAt":"` + at(0) + `"}`,
		`{"eventId":"dash-a-in","type":"installed","platform":"apple","customerId":"dash-a","passType":"loyalty","occurredAt":"` + at(time.Hour) + `"}`,
		`{"eventId":"dash-b-is","type":"issued","customerId":"dash-b","passType":"loyalty","occurredAt":"` + at(0) + `"}`,
		`{"eventId":"dash-b-in","type":"installed","platform":"google","customerId":"dash-b","passType":"loyalty","occurredAt":"` + at(72*time.Hour) + `"}`,
		`{"eventId":"dash-c-is","type":"issued","customerId":"dash-c","passType":"coupon","occurredAt":"` + at(24*time.Hour) + `"}`,
		`{"eventId":"dash-d-is","type":"issued","customerId":"dash-d","occurredAt":"` + at(48*time.Hour) + `"}`,
		`{"eventId":"dash-d-in","type":"installed","platform":"apple","customerId":"dash-d","occurredAt":"` + at(48*time.Hour+10*time.Minute) + `"}`,
		`{"eventId":"dash-r-a","type":"uninstalled","platform":"apple","customerId":"dash-a","passType":"loyalty","occurredAt":"` + at(2*time.Hour) + `","registration":{"activeCount":1,"totalCount":2}}`,
		`{"eventId":"dash-r-b","type":"uninstalled","platform":"google","customerId":"dash-b","passType":"loyalty","occurredAt":"` + at(80*time.Hour) + `","registration":{"activeCount":2,"totalCount":3}}`,
	} {
		out = append(out, []byte(l))
	}
	return out
}
