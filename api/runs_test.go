package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/api"
	"github.com/walletsync/walletsync/ingest/passapi"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/peers/passapidoc"
)

func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// GET /v1/backfill/runs lists the runs the backfill reported, newest
// first and without their customer samples; /v1/backfill/runs/{id} is one
// run's whole report, as RunOnce returned it; an unknown id is a 404, and
// both want the bearer token.
func TestBackfillRunsEndpoints(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "runs-test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, kadm.NewClient(cl), kafka.DefaultTopics(), kafka.Layout{Partitions: 1, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	serve := func() string {
		runs, err := api.NewRuns(emb.Brokers(), "", "tok", slog.Default())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(runs.Close)
		mux := http.NewServeMux()
		runs.Handle(mux)
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	// Before any run the topic does not exist. (A server of its own: a
	// client's metadata of a missing topic is cached for a moment.)
	if code, body := get(t, serve()+"/v1/backfill/runs", "tok"); code != 200 || strings.TrimSpace(string(body)) != `{"runs":[]}` {
		t.Errorf("before any run: %d %s", code, body)
	}
	at := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	doc := passapidoc.New("brand", "k", []passapidoc.Pass{
		{ID: "p1", Identifiers: map[string]string{"customerId": "alice"}, Providers: map[string]*time.Time{passapidoc.ProviderApple: &at}},
		{ID: "p2", Identifiers: map[string]string{"customerId": "bob"}},
		{ID: "p3", Identifiers: map[string]string{"email": "x@example.com"}},
	})
	url, stop := doc.Start()
	defer stop()
	client, err := passapi.NewClient(passapi.ClientConfig{BaseURL: url, Tenant: "brand", APIKey: "k", PageSize: 2, Rate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	b, err := passapi.NewBackfill(passapi.Config{Client: client, Brokers: emb.Brokers()})
	if err != nil {
		t.Fatal(err)
	}
	var reps []passapi.RunReport
	for range 2 {
		rep, err := b.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, rep.Run)
	}
	// The first run knew none of the passes; the second has them all.
	if reps[0].Drift.UnknownPass != 2 || reps[0].Skipped != 1 || len(reps[0].Customers[passapi.KindUnknownPass]) != 2 {
		t.Fatalf("first run: %+v", reps[0])
	}

	base := serve()
	if code, body := get(t, base+"/v1/backfill/runs", ""); code != 401 {
		t.Errorf("without the token: %d %s", code, body)
	}
	code, body := get(t, base+"/v1/backfill/runs", "tok")
	var list struct{ Runs []map[string]any }
	if err := json.Unmarshal(body, &list); code != 200 || err != nil || len(list.Runs) != 2 {
		t.Fatalf("list: %d %s", code, body)
	}
	for i, want := range []passapi.RunReport{reps[1], reps[0]} {
		got := list.Runs[i]
		if _, ok := got["customers"]; ok || got["runId"] != want.RunID || got["passes"] != float64(3) || got["done"] != true {
			t.Errorf("list entry %d: %v, want run %s without customers", i, got, want.RunID)
		}
	}
	if code, body := get(t, base+"/v1/backfill/runs?limit=1", "tok"); code != 200 || !strings.Contains(string(body), reps[1].RunID) || strings.Contains(string(body), reps[0].RunID) {
		t.Errorf("limit=1: %d %s", code, body)
	}
	code, body = get(t, base+"/v1/backfill/runs/"+reps[0].RunID, "tok")
	var one passapi.RunReport
	if err := json.Unmarshal(body, &one); code != 200 || err != nil || !reflect.DeepEqual(one, reps[0]) {
		t.Errorf("run %s: %d %s, want %+v", reps[0].RunID, code, body, reps[0])
	}
	if code, body := get(t, base+"/v1/backfill/runs/"+reps[0].RunID, "wrong"); code != 401 {
		t.Errorf("one run with a wrong token: %d %s", code, body)
	}
	code, body = get(t, base+"/v1/backfill/runs/nope", "tok")
	var e struct{ Error string }
	if json.Unmarshal(body, &e); code != 404 || e.Error == "" {
		t.Errorf("unknown run: %d %s", code, body)
	}
}
