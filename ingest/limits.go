package ingest

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/walletsync/walletsync/internal/httpjson"
)

// Limits bound the memory and time request bodies may take before their
// sender is known. A webhook's signature covers its body, so every webhook
// body is read before it is authenticated; so are connector calls without
// --connector-api-key and /v1/events without --api-token. Bearer tokens and
// X-API-KEY are checked before a byte of the body is read, and those bodies
// draw from a budget of their own, so unauthenticated traffic cannot starve
// them.
type Limits struct {
	// OpenBudget is how many bytes of unauthenticated bodies larger than
	// SmallBody may be buffered (being read or being handled) at once,
	// over every connection. Default 32 MiB: three 10 MiB batches, or 32
	// webhook bodies at their 1 MiB limit.
	OpenBudget int64
	// SmallBody and SmallBudget: unauthenticated bodies of at most
	// SmallBody bytes draw from a reserve of their own, so that large
	// slow bodies cannot starve the small deliveries webhooks and connector
	// calls are (a few hundred bytes). Defaults 16 KiB and 8 MiB (512
	// small bodies at once).
	SmallBody, SmallBudget int64
	// TrustedBudget is how many bytes of authenticated bodies may be
	// buffered at once. Default 64 MiB.
	TrustedBudget int64
	// BodyWait is how long a request waits for room in its budget before
	// it is answered 503 with Retry-After. Default 2 s.
	BodyWait time.Duration
	// A body must arrive within BodyTimeout plus one second per MinBodyRate
	// bytes of its declared length (of the endpoint's limit when it
	// declares none), else 408. Defaults 5 s and 128 KiB/s (1 Mbit/s): 13 s
	// for a webhook at its 1 MiB limit, 85 s for a 10 MiB batch.
	BodyTimeout time.Duration
	MinBodyRate int64
}

// DefaultLimits are the Limits a zero Config.Limits field takes.
var DefaultLimits = Limits{
	OpenBudget:    32 << 20,
	SmallBody:     16 << 10,
	SmallBudget:   8 << 20,
	TrustedBudget: 64 << 20,
	BodyWait:      2 * time.Second,
	BodyTimeout:   5 * time.Second,
	MinBodyRate:   128 << 10,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.OpenBudget <= 0 {
		l.OpenBudget = d.OpenBudget
	}
	if l.SmallBody <= 0 {
		l.SmallBody = d.SmallBody
	}
	if l.SmallBudget <= 0 {
		l.SmallBudget = d.SmallBudget
	}
	if l.TrustedBudget <= 0 {
		l.TrustedBudget = d.TrustedBudget
	}
	if l.BodyWait <= 0 {
		l.BodyWait = d.BodyWait
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = d.BodyTimeout
	}
	if l.MinBodyRate <= 0 {
		l.MinBodyRate = d.MinBodyRate
	}
	l.SmallBody = min(l.SmallBody, l.SmallBudget)
	return l
}

// budget is a counting semaphore of bytes. A request larger than the whole
// budget is let in alone, so a budget configured below an endpoint's limit
// slows its largest bodies down instead of refusing them for ever.
type budget struct {
	mu    sync.Mutex
	size  int64
	used  int64
	freed chan struct{} // closed (and replaced) when bytes are released
	gauge prometheus.Gauge
}

func newBudget(size int64, g prometheus.Gauge) *budget {
	return &budget{size: size, freed: make(chan struct{}), gauge: g}
}

// acquire takes n bytes, waiting until wait ends or ctx is done for others
// to release them.
func (b *budget) acquire(ctx context.Context, n int64, wait *time.Timer) bool {
	for {
		b.mu.Lock()
		if b.used+n <= b.size || b.used == 0 {
			b.used += n
			b.gauge.Add(float64(n))
			b.mu.Unlock()
			return true
		}
		ch := b.freed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-wait.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.gauge.Sub(float64(n))
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// budgets are a Server's three budgets.
type budgets struct {
	lim                  Limits
	small, open, trusted *budget
}

func newBudgets(lim Limits, m *Metrics) *budgets {
	return &budgets{
		lim:     lim,
		small:   newBudget(lim.SmallBudget, m.bodyBytes.WithLabelValues("small")),
		open:    newBudget(lim.OpenBudget, m.bodyBytes.WithLabelValues("open")),
		trusted: newBudget(lim.TrustedBudget, m.bodyBytes.WithLabelValues("trusted")),
	}
}

// reservation is what one request holds of a budget.
type reservation struct {
	b       *budgets
	trusted bool
	pool    *budget
	n       int64
	wait    *time.Timer
}

// grow makes the reservation total bytes (more than it holds). An
// unauthenticated body moves from the small reserve to the open budget when
// it outgrows SmallBody.
func (r *reservation) grow(ctx context.Context, total int64) bool {
	pool := r.b.trusted
	if !r.trusted {
		pool = r.b.open
		if total <= r.b.lim.SmallBody {
			pool = r.b.small
		}
	}
	if pool == r.pool {
		if !pool.acquire(ctx, total-r.n, r.wait) {
			return false
		}
		r.n = total
		return true
	}
	if !pool.acquire(ctx, total, r.wait) {
		return false
	}
	r.release()
	r.pool, r.n = pool, total
	return true
}

func (r *reservation) release() {
	if r.pool != nil {
		r.pool.release(r.n)
		r.pool, r.n = nil, 0
	}
}

// errRecorder remembers the error of the connection's reads, to tell them
// from the errors of the gzip stream above them.
type errRecorder struct {
	r   io.Reader
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// contentEncoding reads Content-Encoding: identity or gzip (x-gzip), else
// 415.
func (s *Server) contentEncoding(w http.ResponseWriter, r *http.Request, src string) (gz, ok bool) {
	var codings []string
	for _, v := range r.Header.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(strings.TrimSpace(c)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	switch {
	case len(codings) == 0:
		return false, true
	case len(codings) == 1 && (codings[0] == "gzip" || codings[0] == "x-gzip"):
		return true, true
	}
	s.m.bodiesRefused.WithLabelValues(src, "encoding").Inc()
	w.Header().Set("Accept-Encoding", "gzip")
	httpjson.WriteError(w, http.StatusUnsupportedMediaType, "Content-Encoding "+strconv.Quote(strings.Join(codings, ", "))+" is not supported: send the body as is or gzip-compressed")
	return false, false
}

// readBody reads a request body of at most limit bytes (after gzip
// decoding, so a small compressed body cannot decompress into a large one)
// within the budget of its kind and a read deadline sized to it. It answers
// the request itself when it fails: 413 over the limit, 408 when the body
// does not arrive in time, 503 with Retry-After when the budget is full,
// 415 for an encoding other than gzip, 400 when the body cannot be read.
// On success the caller must call done once it no longer holds the body:
// the body counts against the budget until then.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, src string, limit int64, trusted bool) (body []byte, done func(), ok bool) {
	gz, ok := s.contentEncoding(w, r, src)
	if !ok {
		return nil, nil, false
	}
	decompressed := ""
	if gz {
		decompressed = " once decompressed"
	}
	tooLarge := func(what string) {
		s.m.bodiesRefused.WithLabelValues(src, "too_large").Inc()
		w.Header().Set("Connection", "close")
		httpjson.WriteError(w, http.StatusRequestEntityTooLarge, "body over "+strconv.FormatInt(limit, 10)+" bytes"+what)
	}
	declared := r.ContentLength // -1: not declared (chunked)
	if declared > limit {
		tooLarge("")
		return nil, nil, false
	}
	lim := s.lim
	expect := limit
	if declared >= 0 {
		expect = declared
	}
	timeout := lim.BodyTimeout + time.Duration(expect)*time.Second/time.Duration(lim.MinBodyRate)
	rc := http.NewResponseController(w)
	// ErrNotSupported only outside a real server (httptest.ResponseRecorder).
	_ = rc.SetReadDeadline(time.Now().Add(timeout))

	res := &reservation{b: s.budgets, trusted: trusted, wait: time.NewTimer(lim.BodyWait)}
	defer res.wait.Stop()
	busy := func() {
		res.release()
		s.m.bodiesRefused.WithLabelValues(src, "busy").Inc()
		w.Header().Set("Retry-After", "1")
		httpjson.WriteError(w, http.StatusServiceUnavailable, "too many request bodies are being received; retry in a second")
	}
	// The buffer grows as the body arrives, up to the declared length (+1
	// to see the end) when the body is not compressed, else up to limit+1
	// (one byte over: 413). The reservation is taken ahead: the declared
	// length at once, else SmallBody, then as the buffer grows.
	maxCap, initial := limit+1, min(limit+1, lim.SmallBody)
	if declared >= 0 && !gz {
		maxCap, initial = declared+1, declared+1
	}
	if !res.grow(r.Context(), initial) {
		busy()
		return nil, nil, false
	}
	var in io.Reader = http.MaxBytesReader(w, r.Body, limit)
	conn := &errRecorder{r: in}
	in = conn
	if gz {
		zr, err := gzip.NewReader(in)
		if err != nil {
			res.release()
			s.readFailed(w, src, conn.err, err, timeout, tooLarge)
			return nil, nil, false
		}
		in = zr
	}
	buf := make([]byte, 0, min(initial, 64<<10))
	for {
		if len(buf) == cap(buf) {
			if int64(cap(buf)) >= maxCap {
				res.release()
				tooLarge(decompressed)
				return nil, nil, false
			}
			next := min(max(2*int64(cap(buf)), 4<<10), maxCap)
			if next > res.n && !res.grow(r.Context(), next) {
				busy()
				return nil, nil, false
			}
			nb := make([]byte, len(buf), next)
			copy(nb, buf)
			buf = nb
		}
		n, err := in.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			res.release()
			s.readFailed(w, src, conn.err, err, timeout, tooLarge)
			return nil, nil, false
		}
	}
	if int64(len(buf)) > limit {
		res.release()
		tooLarge(decompressed)
		return nil, nil, false
	}
	// The body is in: lift the deadline, which would otherwise cut the
	// connection (and cancel the request's context) while the handler
	// waits for Kafka.
	_ = rc.SetReadDeadline(time.Time{})
	return buf, res.release, true
}

// readFailed answers a body that could not be read: connErr is the
// connection's error (nil when it read fine), err what the reader above it
// returned.
func (s *Server) readFailed(w http.ResponseWriter, src string, connErr, err error, timeout time.Duration, tooLarge func(string)) {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe) || errors.As(connErr, &mbe):
		tooLarge("")
	case errors.Is(connErr, os.ErrDeadlineExceeded) || errors.As(connErr, &ne) && ne.Timeout():
		s.m.bodiesRefused.WithLabelValues(src, "timeout").Inc()
		w.Header().Set("Connection", "close")
		httpjson.WriteError(w, http.StatusRequestTimeout, "the body did not arrive within "+timeout.Round(time.Millisecond).String())
	case connErr == nil:
		s.m.bodiesRefused.WithLabelValues(src, "unreadable").Inc()
		httpjson.WriteError(w, http.StatusBadRequest, "body is not valid gzip: "+err.Error())
	default:
		s.m.bodiesRefused.WithLabelValues(src, "unreadable").Inc()
		w.Header().Set("Connection", "close")
		httpjson.WriteError(w, http.StatusBadRequest, "reading the body: "+connErr.Error())
	}
}

// ServerLimits are the connection-level bounds of the http.Server that
// serves ingest: what a client costs before any handler runs.
type ServerLimits struct {
	// MaxHeaderBytes bounds a request's header block (net/http's default
	// is 1 MiB, held for up to ReadHeaderTimeout by a slow client).
	// Default 32 KiB: a bearer token and a signature are under 1 KiB.
	MaxHeaderBytes int
	// ReadHeaderTimeout and IdleTimeout: defaults 10 s and 2 min.
	ReadHeaderTimeout, IdleTimeout time.Duration
	// MaxConns bounds the open connections. At the bound a new connection
	// first closes an idle keep-alive one; when none is idle it is closed
	// at once. Default 1024 (each costs about 20 KiB plus, while its
	// headers arrive, up to MaxHeaderBytes).
	MaxConns int
}

// DefaultServerLimits are HardenServer's limits.
var DefaultServerLimits = ServerLimits{MaxHeaderBytes: 32 << 10, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxConns: 1024}

// HardenServer applies DefaultServerLimits to hs before it serves; reg
// (may be nil) receives walletsync_http_connections_refused_total and
// walletsync_http_connections_open.
func HardenServer(hs *http.Server, reg prometheus.Registerer) {
	DefaultServerLimits.Apply(hs, reg)
}

// Apply tightens hs to l: a setting of hs that is already tighter stays.
func (l ServerLimits) Apply(hs *http.Server, reg prometheus.Registerer) {
	if l.MaxHeaderBytes > 0 && (hs.MaxHeaderBytes <= 0 || hs.MaxHeaderBytes > l.MaxHeaderBytes) {
		hs.MaxHeaderBytes = l.MaxHeaderBytes
	}
	if l.ReadHeaderTimeout > 0 && (hs.ReadHeaderTimeout <= 0 || hs.ReadHeaderTimeout > l.ReadHeaderTimeout) {
		hs.ReadHeaderTimeout = l.ReadHeaderTimeout
	}
	if l.IdleTimeout > 0 && (hs.IdleTimeout <= 0 || hs.IdleTimeout > l.IdleTimeout) {
		hs.IdleTimeout = l.IdleTimeout
	}
	if l.MaxConns <= 0 {
		return
	}
	cl := &connLimiter{max: l.MaxConns, conns: map[net.Conn]http.ConnState{}, next: hs.ConnState,
		refused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "walletsync", Subsystem: "http", Name: "connections_refused_total",
			Help: "Connections closed because MaxConns were open: new ones when none was idle, else idle ones to make room."}),
	}
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "walletsync", Subsystem: "http", Name: "connections_open",
		Help: "Open HTTP connections."}, func() float64 { cl.mu.Lock(); defer cl.mu.Unlock(); return float64(len(cl.conns)) })
	if reg != nil {
		reg.MustRegister(cl.refused, open)
	}
	hs.ConnState = cl.hook
}

// connLimiter bounds a server's open connections through its ConnState hook,
// which net/http calls for a new connection before serving it.
type connLimiter struct {
	mu      sync.Mutex
	max     int
	conns   map[net.Conn]http.ConnState
	refused prometheus.Counter
	next    func(net.Conn, http.ConnState)
}

func (l *connLimiter) hook(c net.Conn, st http.ConnState) {
	var closing net.Conn
	l.mu.Lock()
	switch st {
	case http.StateNew:
		if len(l.conns) >= l.max {
			closing = c
			for k, s := range l.conns {
				if s == http.StateIdle {
					closing = k
					break
				}
			}
			l.refused.Inc()
		}
		if closing != c {
			delete(l.conns, closing) // nil when there is room
			l.conns[c] = st
		}
	case http.StateActive, http.StateIdle:
		if _, ok := l.conns[c]; ok {
			l.conns[c] = st
		}
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, c)
	}
	l.mu.Unlock()
	if closing != nil {
		closing.Close()
	}
	if l.next != nil {
		l.next(c, st)
	}
}
