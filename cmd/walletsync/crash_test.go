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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
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
			stop := make(chan struct{})
			go func() {
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
		st, err := walletsync.ParseStatus(r.Value)
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
