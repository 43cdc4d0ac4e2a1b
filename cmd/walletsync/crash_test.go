package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/api"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/processors"
	"github.com/walletsync/walletsync/sinks/parquet"
	"github.com/walletsync/walletsync/wire"
)

var (
	long      = flag.Bool("long", false, "crash tests: 80 kills instead of 10 (50 and more recoveries measured)")
	crashLogs = flag.String("crash-logs", "", "crash tests: keep every child's log in this directory")
)

// TestMain lets a test run the binary itself as a child process: the crash
// tests SIGKILL a real `walletsync run`, which an in-process role cannot
// model (its goroutines would stop in order; a kill stops nothing in order).
func TestMain(m *testing.M) {
	if os.Getenv("WALLETSYNC_TEST_CHILD") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// child is one `walletsync …` process started from the test binary.
type child struct {
	cmd     *exec.Cmd
	url     string
	logPath string
	started time.Time
	exited  chan struct{}
}

func startChild(t *testing.T, logPath, httpAddr string, args ...string) *child {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "WALLETSYNC_TEST_CHILD=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	c := &child{cmd: cmd, url: "http://" + httpAddr, logPath: logPath, started: time.Now(), exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); logf.Close(); close(c.exited) }()
	t.Cleanup(func() { c.kill() })
	return c
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// dump asks the child for a goroutine dump (SIGQUIT) and returns the end of
// its log: what a wedged process waits for.
func (c *child) dump() string {
	_ = c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		c.kill()
	}
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 60_000 {
		b = b[len(b)-60_000:]
	}
	return string(b)
}

// get fetches a URL with a short timeout; code 0 means no answer.
func get(url string) (int, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// waitLagZero polls /v1/pipeline until the lag is 0 or the deadline passes.
func (c *child) waitLagZero(deadline time.Time) (bool, string) {
	last := ""
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return false, "the process exited: " + last
		default:
		}
		code, b := get(c.url + "/v1/pipeline")
		last = fmt.Sprintf("%d %s", code, b)
		var rep struct{ Lag *int64 }
		if code == 200 && json.Unmarshal(b, &rep) == nil && rep.Lag != nil && *rep.Lag == 0 {
			return true, last
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false, last
}

// poster sends batches of the stream in order; a batch that was not
// acknowledged (the process died under it) is sent again, so that in the
// end every line was acknowledged at least once.
type poster struct {
	batches [][]byte
	mu      sync.Mutex
	next    int // first batch not yet acknowledged
}

// post sends batches from next on until stop is closed, n batches have
// been acknowledged (n < 0: no limit), or an attempt fails. It returns how
// many it got acknowledged.
func (p *poster) post(url string, n int, stop <-chan struct{}) int {
	acked := 0
	for n < 0 || acked < n {
		select {
		case <-stop:
			return acked
		default:
		}
		p.mu.Lock()
		i := p.next
		p.mu.Unlock()
		if i >= len(p.batches) {
			return acked
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/events", bytes.NewReader(p.batches[i]))
		req.Header.Set("Content-Type", "application/x-ndjson")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
		if err != nil || resp.StatusCode != 200 {
			return acked // not acknowledged: sent again later
		}
		p.mu.Lock()
		p.next++
		p.mu.Unlock()
		acked++
	}
	return acked
}

// sent is every line of the acknowledged batches.
func (p *poster) sent() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out [][]byte
	for _, b := range p.batches[:p.next] {
		out = append(out, bytes.Split(b, []byte("\n"))...)
	}
	return out
}

// crashStream is a stream long enough for every cycle (at most about 70
// batches each): synth's customers with duplicates, late events and
// reinstalls, in batches of 100 lines.
func crashStream(cycles int) [][]byte {
	cfg := synth.Default(cycles*8000 + 10_000)
	cfg.Customers, cfg.Seed = 3000, 7
	lines := synth.Lines(cfg)
	var batches [][]byte
	for i := 0; i < len(lines); i += 100 {
		batches = append(batches, bytes.Join(lines[i:min(i+100, len(lines))], []byte("\n")))
	}
	return batches
}

// A SIGKILL at any moment of `walletsync run` — in the first second after a
// start (loading, fencing), mid-burst, across archive rolls and checkpoints
// — is followed at once by a restart and new traffic; the pipeline must be
// back at lag 0 within 15 s of the restart every time, and in the end every
// acknowledged event is folded exactly once: the statuses equal `walletsync
// fold`, each eventId is on the clean topic once, no status version repeats.
func TestRunSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the crash test takes minutes")
	}
	cycles := 10
	if *long {
		// A kill in the first second after a start interrupts that
		// start's recovery, so about a third of the kills measure none.
		cycles = 80
	}
	const recoveryBound = 15 * time.Second
	dir := t.TempDir()
	logDir := *crashLogs
	if logDir == "" {
		logDir = t.TempDir()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	kafkaAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"run", "--data-dir", dir, "--http", httpAddr, "--kafka-listen", kafkaAddr, "--partitions", "3", "--transactional-id", "crash", "--log-level", "info"}
	p := &poster{batches: crashStream(cycles)}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d, %d cycles, %d batches", seed, cycles, len(p.batches))

	type recovery struct {
		cycle   int
		after   string
		seconds float64
	}
	var (
		recoveries []recovery
		prevKill   = "first start"
	)
	for i := 0; i <= cycles; i++ {
		c := startChild(t, filepath.Join(logDir, fmt.Sprintf("cycle-%02d.log", i)), httpAddr, args...)
		last := i == cycles
		kind := []string{"early", "burst", "steady"}[rng.IntN(3)]
		if kind == "early" && !last {
			// Killed within the first second: while it loads, fences
			// and opens its first transactions, with traffic arriving.
			stop, posted := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(posted)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if code, _ := get(c.url + "/healthz"); code == 200 {
						p.post(c.url, 20, stop)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond)
			c.kill()
			close(stop)
			<-posted // its requests fail fast on the dead port; p.next is read below
			prevKill = fmt.Sprintf("kill %.2fs after start", time.Since(c.started).Seconds())
			continue
		}
		// New traffic at once: a burst as soon as the port answers.
		for time.Since(c.started) < recoveryBound {
			if code, _ := get(c.url + "/healthz"); code == 200 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if p.next+8 > len(p.batches) {
			t.Fatalf("cycle %d: the stream is too short for the cycles (%d batches)", i, len(p.batches))
		}
		if p.post(c.url, 8, nil) < 8 {
			t.Fatalf("cycle %d (after %s): ingest did not take a burst after the restart:\n%s", i, prevKill, tail(c.dump(), 4000))
		}
		ok, state := c.waitLagZero(c.started.Add(recoveryBound))
		if !ok {
			t.Fatalf("cycle %d (after %s): lag not 0 within %v of the restart: %s\nlog:\n%s", i, prevKill, recoveryBound, state, tail(c.dump(), 30000))
		}
		recoveries = append(recoveries, recovery{i, prevKill, time.Since(c.started).Seconds()})
		if last {
			checkCrashOutcome(t, c, kafkaAddr, p)
			c.kill()
			break
		}
		// Then traffic until a kill at a random moment: mid-burst, or
		// anywhere in the next 12 s, which spans checkpoints (every 5 s)
		// and archive rolls (every 10 s).
		wait := time.Duration(rng.IntN(12000)) * time.Millisecond
		if kind == "burst" {
			wait = time.Duration(rng.IntN(1500)) * time.Millisecond
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		pause := make([]time.Duration, 200) // the poster's own draws: rng is not safe for concurrent use
		for j := range pause {
			pause[j] = time.Duration(200+rng.IntN(300)) * time.Millisecond
		}
		go func() {
			defer close(done)
			if kind == "burst" {
				// As fast as ingest takes them: the processors are
				// still working when the kill comes.
				p.post(c.url, 40, stop)
				return
			}
			for j := 0; ; j++ {
				p.post(c.url, 1, stop)
				select {
				case <-stop:
					return
				case <-time.After(pause[j%len(pause)]):
				}
			}
		}()
		time.Sleep(wait)
		c.kill()
		close(stop)
		<-done
		prevKill = fmt.Sprintf("%s kill %.2fs after lag 0", kind, wait.Seconds())
	}
	secs := make([]float64, len(recoveries))
	for i, r := range recoveries {
		secs[i] = r.seconds
		t.Logf("recovery %2d after %-32s %5.2fs", r.cycle, r.after, r.seconds)
	}
	slices.Sort(secs)
	q := func(f float64) float64 { return secs[min(len(secs)-1, int(f*float64(len(secs))))] }
	t.Logf("recovery times over %d restarts: min %.2fs median %.2fs p90 %.2fs max %.2fs", len(secs), secs[0], q(0.5), q(0.9), secs[len(secs)-1])
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// checkCrashOutcome: every acknowledged line folded exactly once.
func checkCrashOutcome(t *testing.T, c *child, kafkaAddr string, p *poster) {
	t.Helper()
	lines := p.sent()
	code, body := get(c.url + "/v1/status")
	if code != 200 {
		t.Fatalf("/v1/status: %d", code)
	}
	if got, want := normalise(t, string(body)), foldOf(t, lines); got != want {
		t.Errorf("/v1/status differs from walletsync fold of the acknowledged events:\n%s", diffLines(got, want))
	}
	brokers := []string{kafkaAddr}
	checkCleanTopic(t, brokers, lines)
	versions := map[string][]uint64{}
	for _, r := range readTopic(t, brokers, kafka.DefaultTopics().Status) {
		st, err := wire.ParseStatus(r.Value)
		if err != nil {
			t.Fatalf("wallet.status holds %q: %v", r.Value, err)
		}
		versions[string(r.Key)] = append(versions[string(r.Key)], st.Version)
	}
	for id, vs := range versions {
		for i := 1; i < len(vs); i++ {
			if vs[i] <= vs[i-1] {
				t.Errorf("customer %q: wallet.status versions %v do not increase (one repeats or goes back)", id, vs)
				break
			}
		}
	}
	if len(versions) == 0 {
		t.Error("wallet.status is empty")
	}
}

// The roles as separate processes on a three-broker cluster: ingest, two
// processors, the Parquet sink and the read API. One of them is SIGKILLed
// at a random moment while events flow and restarted at once, cycle after
// cycle, and one processor is killed for good halfway. After each restart,
// with new traffic, every consumer must be back at lag 0 within 15 s (the
// processor killed for good: within its session timeout, 10 s, and the
// transaction timeout, 30 s, plus 15 s);
// in the end every acknowledged event is folded once and archived once.
func TestRolesSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the crash test takes minutes")
	}
	cycles := 8
	if *long {
		cycles = 40
	}
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 3}, kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	brokers := strings.Join(emb.Brokers(), ",")
	logDir := *crashLogs
	if logDir == "" {
		logDir = t.TempDir()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := t.TempDir()
	type role struct {
		addr string
		args []string
		c    *child
		gone bool // killed for good
	}
	roles := map[string]*role{}
	add := func(name string, args ...string) {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		roles[name] = &role{addr: addr, args: append(args, "--brokers", brokers, "--http", addr, "--log-level", "info")}
	}
	add("ingest", "ingest", "--partitions", "6")
	add("process-a", "process", "--transactional-id", "a")
	add("process-b", "process", "--transactional-id", "b")
	add("archive", "sink", "parquet", "--archive-dir", archive, "--archive-roll-interval", "10s")
	add("query", "query")
	start := func(name string, n int) {
		r := roles[name]
		r.c = startChild(t, filepath.Join(logDir, fmt.Sprintf("roles-%02d-%s.log", n, name)), r.addr, r.args...)
		for time.Since(r.c.started) < 15*time.Second {
			if code, _ := get(r.c.url + "/healthz"); code == 200 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s did not start:\n%s", name, tail(r.c.dump(), 4000))
	}
	start("ingest", 0) // creates the topics
	for _, name := range []string{"process-a", "process-b", "archive", "query"} {
		start(name, 0)
	}
	cl, err := kgo.NewClient(kafka.ClientOpts(emb.Brokers(), "test-lag")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics := kafka.DefaultTopics()
	lag := api.NewLag(kadm.NewClient(cl), topics.Events, topics.Status, processors.DefaultGroup, nil, topics.Clean, topics.Status, topics.State)
	lag.AddGroup(parquet.DefaultGroup, topics.Clean, topics.Status)
	// caughtUp: the processors and the archive (measured here) and the
	// read API's view (its /v1/pipeline) have all reached the end.
	caughtUp := func(deadline time.Time) (bool, string) {
		last := ""
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			rep, err := lag.Compute(ctx)
			cancel()
			last = fmt.Sprintf("%+v %v", rep.Consumers, err)
			if err == nil && rep.Lag == 0 {
				if ok, state := roles["query"].c.waitLagZero(time.Now().Add(100 * time.Millisecond)); ok {
					return true, ""
				} else {
					last += " query: " + state
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		return false, last
	}

	p := &poster{batches: crashStream(cycles)}
	ingestURL := func() string { return roles["ingest"].c.url }
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 2))
	t.Logf("seed %d, %d cycles", seed, cycles)
	if p.post(ingestURL(), 10, nil) < 10 {
		t.Fatal("ingest did not take the first batches")
	}
	if ok, state := caughtUp(time.Now().Add(60 * time.Second)); !ok {
		t.Fatalf("never caught up at the start: %s", state)
	}
	victims := []string{"ingest", "process-a", "process-b", "process-a", "process-b", "archive", "query"}
	var recoveries []float64
	for i := 1; i <= cycles; i++ {
		name := victims[rng.IntN(len(victims))]
		forGood := i == cycles/2
		if forGood {
			name = "process-b"
		}
		if roles[name].gone {
			name = "process-a"
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				if p.post(ingestURL(), 1, stop) == 0 {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
		roles[name].c.kill()
		close(stop)
		<-done
		killed := time.Now()
		bound := 15 * time.Second
		if forGood {
			// The group waits out the dead member's session timeout
			// (10 s) before its partitions move, and a transaction it
			// left open on them holds their loads until the broker's
			// transaction timeout (30 s) ends it: nobody reuses its
			// transactional id to fence it sooner.
			roles[name].gone = true
			bound += 40 * time.Second
		} else {
			start(name, i)
		}
		if p.next+8 > len(p.batches) {
			t.Fatalf("the stream is too short (%d batches)", len(p.batches))
		}
		if p.post(ingestURL(), 8, nil) < 8 {
			t.Fatalf("cycle %d: ingest did not take a burst after %s's restart", i, name)
		}
		if ok, state := caughtUp(killed.Add(bound)); !ok {
			var logs strings.Builder
			for n, r := range roles {
				if !r.gone {
					fmt.Fprintf(&logs, "--- %s\n%s\n", n, tail(r.c.dump(), 6000))
				}
			}
			t.Fatalf("cycle %d: %s killed (for good: %v); not at lag 0 within %v: %s\n%s", i, name, forGood, bound, state, logs.String())
		}
		took := time.Since(killed).Seconds()
		if !forGood {
			recoveries = append(recoveries, took)
		}
		t.Logf("cycle %2d: %-9s killed%s, lag 0 after %.2fs", i, name, map[bool]string{true: " for good", false: ""}[forGood], took)
	}
	slices.Sort(recoveries)
	t.Logf("recovery times over %d restarts: min %.2fs median %.2fs max %.2fs", len(recoveries), recoveries[0], recoveries[len(recoveries)/2], recoveries[len(recoveries)-1])

	checkCrashOutcome(t, roles["query"].c, emb.Brokers()[0], p)
	archived := map[string]int{}
	if err := parquet.ReadDataset(archive, parquet.EventsDataset, "", "", func(rows []parquet.EventRow) error {
		for i := range rows {
			archived[rows[i].Event().ID]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, l := range p.sent() {
		if e, err := wire.ParseEvent(l); err == nil {
			want[e.ID] = true
		}
	}
	for id, n := range archived {
		if n != 1 || !want[id] {
			t.Errorf("event %s archived %d times (sent: %v)", id, n, want[id])
		}
	}
	if len(archived) != len(want) {
		t.Errorf("%d events archived, %d sent", len(archived), len(want))
	}
}
