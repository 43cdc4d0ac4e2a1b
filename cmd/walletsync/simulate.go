package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/walletsync/walletsync/ingest/passapi/passapitest"
	"github.com/walletsync/walletsync/internal/simulate"
)

type simulateFlags struct {
	url, webhookSecret, connectorKey string
	rate                             float64
	duration                         time.Duration
	customers                        int
	seed                             uint64
}

func (s *simulateFlags) register(fs *flag.FlagSet, withURL bool) {
	if withURL {
		fs.StringVar(&s.url, "url", "http://localhost:8080", "walletsync's base `URL`")
		fs.StringVar(&s.webhookSecret, "webhook-secret", "", "sign webhooks with this secret (as The Wallet Crew does with signatureSecret)")
		fs.StringVar(&s.connectorKey, "connector-api-key", "", "X-API-KEY for the connector calls")
	}
	fs.Float64Var(&s.rate, "simulate-rate", 200, "simulated requests per second")
	fs.DurationVar(&s.duration, "simulate-duration", 0, "stop simulating after this long (0: until stopped)")
	fs.IntVar(&s.customers, "simulate-customers", 2000, "simulated customers (one or two passes each)")
	fs.Uint64Var(&s.seed, "simulate-seed", 1, "random seed of the simulation")
}

func simulateCommand() command {
	return command{
		name:    "simulate",
		summary: "realistic traffic against a running walletsync: signed webhooks, connector calls, duplicates, late events, reinstalls",
		help: `
Plays a population of customers and passes against --url: Pass:Installed and
Pass:Uninstalled webhooks (signed with --webhook-secret) and custom-connector
calls, with 5% duplicate deliveries, 10% webhooks delivered late and out of
order, and quick uninstall/reinstall flaps. Shows progress on a terminal and
prints a JSON summary. "walletsync run --demo" runs it in process together
with a local Pass API, so that the backfill has drift to repair.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			s := &simulateFlags{}
			s.register(fs, true)
			return func(ctx context.Context, e env, args []string) int {
				if len(args) > 0 {
					fmt.Fprintf(e.stderr, "walletsync simulate: unexpected arguments %q\n", args)
					return exitUsage
				}
				var progress func(simulate.Stats)
				if isTerminal(e.stderr) {
					progress = func(st simulate.Stats) {
						fmt.Fprintf(e.stderr, "\rsent %d (webhooks %d, connector %d, duplicates %d, late %d, reinstalls %d, failed %d)",
							st.Sent, st.Webhooks, st.Connector, st.Duplicates, st.Late, st.Reinstalls, st.Failed)
					}
				}
				st, err := simulate.Run(ctx, simulate.Config{URL: s.url, WebhookSecret: s.webhookSecret, ConnectorAPIKey: s.connectorKey,
					Customers: s.customers, Rate: s.rate, Duration: s.duration, Seed: s.seed, Progress: progress})
				if progress != nil {
					fmt.Fprintln(e.stderr)
				}
				out, _ := json.Marshal(st)
				fmt.Fprintln(e.stdout, string(out))
				if err != nil {
					fmt.Fprintf(e.stderr, "walletsync simulate: %v\n", err)
					return exitFail
				}
				return exitOK
			}
		},
	}
}

// demo wires "run --demo": a local Pass API the backfill reads every
// minute, and the simulator playing against this process once it listens.
type demo struct {
	api   *passapitest.Server
	addrs chan net.Addr
}

func (f *roleFlags) setUpDemo(e *env) *demo {
	d := &demo{api: passapitest.New("demo", "demo-pass-api-key"), addrs: make(chan net.Addr, 1)}
	if len(f.webhookSecrets) == 0 {
		f.webhookSecrets = listFlag{"demo-webhook-secret"}
	}
	if f.connectorKey == "" {
		f.connectorKey = "demo-connector-key"
	}
	f.passapi.url, f.passapi.tenant, f.passapi.key = d.api.URL, "demo", "demo-pass-api-key"
	f.passapi.schedule, f.passapi.rate = "* * * * *", 100
	ready := e.ready
	e.ready = func(a net.Addr) {
		d.addrs <- a
		if ready != nil {
			ready(a)
		}
	}
	return d
}

// run simulates against the process's own HTTP address.
func (d *demo) run(f *roleFlags) func(context.Context) error {
	return func(ctx context.Context) error {
		var addr net.Addr
		select {
		case addr = <-d.addrs:
		case <-ctx.Done():
			return nil
		}
		host := "127.0.0.1"
		if a, ok := addr.(*net.TCPAddr); ok && a.IP != nil && !a.IP.IsUnspecified() {
			host = a.IP.String()
		}
		port := addr.(*net.TCPAddr).Port
		_, err := simulate.Run(ctx, simulate.Config{URL: fmt.Sprintf("http://%s:%d", host, port), WebhookSecret: f.webhookSecrets[0],
			ConnectorAPIKey: f.connectorKey, Customers: f.sim.customers, Rate: f.sim.rate, Duration: f.sim.duration, Seed: f.sim.seed,
			PassAPI: d.api})
		return err
	}
}
