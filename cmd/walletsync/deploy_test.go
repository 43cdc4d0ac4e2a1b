package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/walletsync/walletsync/ingest"
	"github.com/walletsync/walletsync/ingest/passapi"
	"github.com/walletsync/walletsync/processors"
	chsink "github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/sinks/crm"
	"github.com/walletsync/walletsync/sinks/parquet"
)

const deployDir = "../../deploy"

// checkCommandLine parses a walletsync command line from a deployment file
// with the real command's flags: an unknown subcommand, flag or value fails.
func checkCommandLine(t *testing.T, where string, args []string) {
	t.Helper()
	if len(args) == 0 {
		t.Errorf("%s: no walletsync command", where)
		return
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.flags(fs)
		rest := args[1:]
		if err := fs.Parse(rest); err != nil {
			t.Errorf("%s: %v in %q", where, err, args)
			return
		}
		if pos := fs.Args(); len(pos) > 0 {
			if c.name != "sink" || !map[string]bool{"clickhouse": true, "crm": true, "parquet": true}[pos[0]] {
				t.Errorf("%s: unexpected argument %q in %q", where, pos[0], args)
				return
			}
			if err := fs.Parse(pos[1:]); err != nil || len(fs.Args()) > 0 {
				t.Errorf("%s: %v %q in %q", where, err, fs.Args(), args)
			}
		}
		return
	}
	t.Errorf("%s: unknown walletsync command %q", where, args[0])
}

func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, strings.ReplaceAll(x.(string), "$(POD_NAME)", "pod-0"))
	}
	return out
}

// The deployment files parse, every walletsync command line in them is one
// the binary accepts, and every metric the Grafana dashboard plots exists.
// (Docker and Kubernetes do not run here: the files are untested on a live
// cluster.)
func TestDeploymentFiles(t *testing.T) {
	compose := yamlDocs(t, filepath.Join(deployDir, "docker-compose.yml"))[0]
	services := compose["services"].(map[string]any)
	checked := 0
	for name, s := range services {
		svc := s.(map[string]any)
		if svc["image"] != "walletsync:latest" {
			continue
		}
		checkCommandLine(t, "docker-compose "+name, strs(svc["command"]))
		checked++
	}
	if checked < 6 {
		t.Errorf("only %d walletsync services in docker-compose.yml", checked)
	}
	if out, err := exec.Command("docker", "compose", "-f", filepath.Join(deployDir, "docker-compose.yml"), "config", "-q").CombinedOutput(); err == nil {
		t.Log("docker compose config: ok")
	} else {
		t.Logf("docker compose config not available here: %s", bytes.TrimSpace(out))
	}

	files, _ := filepath.Glob(filepath.Join(deployDir, "k8s", "*.yaml"))
	kinds := map[string]int{}
	for _, f := range files {
		for _, d := range yamlDocs(t, f) {
			kind, _ := d["kind"].(string)
			meta, _ := d["metadata"].(map[string]any)
			if d["apiVersion"] == nil || kind == "" || meta["name"] == nil {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
				continue
			}
			kinds[kind]++
			if kind != "Deployment" && kind != "Job" {
				continue
			}
			spec := d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			for _, c := range spec["containers"].([]any) {
				checkCommandLine(t, f, strs(c.(map[string]any)["args"]))
			}
		}
	}
	if kinds["Deployment"] < 5 || kinds["Service"] < 2 || kinds["Job"] < 1 {
		t.Errorf("k8s manifests: %v", kinds)
	}
	for _, f := range []string{"prometheus.yml", "grafana/provisioning/datasources/prometheus.yml", "grafana/provisioning/dashboards/walletsync.yml"} {
		yamlDocs(t, filepath.Join(deployDir, f))
	}

	// Every metric name the processes register.
	reg := prometheus.NewRegistry()
	ingest.NewMetrics(reg)
	processors.NewMetrics(reg)
	processors.NewResolverMetrics(reg)
	crm.NewMetrics(reg)
	chsink.NewSinkMetrics(reg)
	parquet.NewMetrics(reg)
	passapi.NewMetrics(reg)
	// The read API's gauges measured at scrape time (serve.go).
	names := map[string]bool{"walletsync_pipeline_lag": true, "walletsync_unmatched_events_waiting": true}
	descs := make(chan *prometheus.Desc, 1000)
	go func() { reg.Describe(descs); close(descs) }()
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range descs {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana", "walletsync.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("grafana/walletsync.json: %v", err)
	}
	ref := regexp.MustCompile(`walletsync_[a-z_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range ref.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(m, "_bucket")
				if !names[base] {
					t.Errorf("panel %q plots %s, which no walletsync process exports", p.Title, m)
				}
			}
		}
	}
}
