package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
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
// draws the numbers the API returns.
func TestDashboardShowsTheAPIsNumbers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser; skipped with -short")
	}
	browser := chromium(t)
	r := startRole(t, "run", "--demo", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--log-level", "warn", "--partitions", "3",
		"--simulate-duration", "3s", "--simulate-rate", "300", "--simulate-customers", "300", "--archive-roll-interval", "300ms")
	time.Sleep(3500 * time.Millisecond) // the simulation's 3 s
	waitCaughtUp(t, r.url)

	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU)...)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	var from, to, installs, uninstalls, errText string
	var polylines int
	var statuses map[string]string
	var retentionRows int
	if err := chromedp.Run(ctx,
		chromedp.Navigate(r.url+"/"),
		chromedp.WaitVisible(`body[data-ready]`, chromedp.ByQuery),
		chromedp.Value(`#from`, &from, chromedp.ByID),
		chromedp.Value(`#to`, &to, chromedp.ByID),
		chromedp.AttributeValue(`#daily-chart`, "data-installs", &installs, nil, chromedp.ByID),
		chromedp.AttributeValue(`#daily-chart`, "data-uninstalls", &uninstalls, nil, chromedp.ByID),
		chromedp.Evaluate(`document.querySelectorAll("#daily-chart polyline").length`, &polylines),
		chromedp.Evaluate(`Object.fromEntries([...document.querySelectorAll("#status-mix .bar")].map(b => [b.dataset.status, b.dataset.customers]))`, &statuses),
		chromedp.Evaluate(`document.querySelectorAll("#retention tr[data-week]").length`, &retentionRows),
		chromedp.Evaluate(`document.getElementById("error").hidden ? "" : document.getElementById("error").textContent`, &errText),
	); err != nil {
		t.Fatal(err)
	}
	if errText != "" {
		t.Fatalf("the dashboard shows an error: %s", errText)
	}
	q := "?from=" + from + "&to=" + to
	var daily struct {
		Rows []struct{ Installs, Uninstalls int }
	}
	_, body := httpDo(t, "GET", r.url+"/v1/insights/daily"+q, "", nil)
	if err := json.Unmarshal(body, &daily); err != nil {
		t.Fatal(err)
	}
	in, un := 0, 0
	for _, row := range daily.Rows {
		in, un = in+row.Installs, un+row.Uninstalls
	}
	if in == 0 || installs != strconv.Itoa(in) || uninstalls != strconv.Itoa(un) {
		t.Errorf("daily chart: %s installs, %s uninstalls; the API: %d, %d", installs, uninstalls, in, un)
	}
	if polylines != 4 {
		t.Errorf("the daily chart has %d series, want 4", polylines)
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
}
