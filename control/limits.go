package control

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits bound what clients can hold of the API listener: open
// connections, all together and from one source address, and the time a
// request body may take to arrive. Zero values get the defaults below.
type Limits struct {
	// MaxConns caps open API connections. At the cap, a connection from a
	// source holding fewer than the heaviest source takes the place of that
	// source's oldest connection; otherwise it is closed as soon as it is
	// accepted. Default DefaultMaxConns.
	MaxConns int
	// MaxConnsPerSource caps open API connections from one address (an
	// IPv6 /64 counts as one address). Trusted proxies are exempt: their
	// connections carry many clients. Default DefaultMaxConnsPerSource.
	MaxConnsPerSource int
	// BodyTimeout is how long a request body may take to arrive, plus one
	// second for every BodyMinRate bytes received; a body that falls
	// behind gets 408 and its connection is closed. Requests without a
	// body (such as a gateway's long-polled netmap GET) are not affected.
	// Default DefaultBodyTimeout.
	BodyTimeout time.Duration
	// BodyMinRate in bytes per second; default DefaultBodyMinRate.
	BodyMinRate int
}

// Defaults of Limits.
const (
	DefaultMaxConns          = 4096
	DefaultMaxConnsPerSource = 64
	DefaultBodyTimeout       = 10 * time.Second
	DefaultBodyMinRate       = 1024
)

func (l Limits) withDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxConnsPerSource <= 0 {
		l.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = DefaultBodyTimeout
	}
	if l.BodyMinRate <= 0 {
		l.BodyMinRate = DefaultBodyMinRate
	}
	return l
}

// sourceOf is the key under which an address is counted: the address, or
// its /64 for IPv6 (one host usually holds a whole /64).
func sourceOf(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// limitMetrics count what the limits refused; they carry no addresses.
type limitMetrics struct {
	open        prometheus.GaugeFunc
	refused     *prometheus.CounterVec // by reason: max_conns, per_source, evicted
	slowBodies  prometheus.Counter
	authBackoff prometheus.Counter
}

func newLimitMetrics(reg *prometheus.Registry, open func() float64) *limitMetrics {
	m := &limitMetrics{
		open: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_control_api_connections_open", Help: "Open API connections."}, open),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_control_api_connections_refused_total", Help: "API connections closed because a connection cap was reached: on accept (max_conns, per_source), or to make room for a lighter source at max_conns (evicted).",
		}, []string{"reason"}),
		slowBodies:  prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_api_slow_bodies_total", Help: "Requests whose body arrived too slowly; their connections were closed."}),
		authBackoff: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_auth_backoff_total", Help: "Failed credentials answered 429 because their source failed too often."}),
	}
	reg.MustRegister(m.open, m.refused, m.slowBodies, m.authBackoff)
	return m
}

// connLimiter counts open API connections, in total and by source. At the
// global cap a newcomer from a source holding fewer connections than the
// heaviest source takes the heaviest source's oldest connection, so that a
// flood from many addresses shares the cap with everyone else instead of
// locking them out; trusted proxies are neither capped nor evicted.
type connLimiter struct {
	max, perSource int
	exempt         func(netip.Addr) bool // trusted proxies

	mu       sync.Mutex
	open     int
	bySource map[netip.Addr]*sourceConns
}

type sourceConns struct {
	src    netip.Addr
	exempt bool
	conns  []*limitedConn // oldest first
}

func newConnLimiter(l Limits, exempt func(netip.Addr) bool) *connLimiter {
	return &connLimiter{max: l.MaxConns, perSource: l.MaxConnsPerSource, exempt: exempt, bySource: map[netip.Addr]*sourceConns{}}
}

func (c *connLimiter) openConns() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return float64(c.open)
}

// admit counts a new connection from the address peer, or says which cap
// refuses it. At the global cap it may instead evict the oldest connection
// of the heaviest source, which the caller closes.
func (c *connLimiter) admit(peer netip.Addr, conn net.Conn) (lc *limitedConn, evicted *limitedConn, refused string) {
	key, exempt := sourceOf(peer), c.exempt(peer.Unmap())
	if exempt {
		key = peer.Unmap() // a proxy is itself, not its /64
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	sc := c.bySource[key]
	mine := 0
	if sc != nil {
		mine = len(sc.conns)
	}
	if !exempt && mine >= c.perSource {
		return nil, nil, "per_source"
	}
	if c.open >= c.max {
		if evicted = c.heaviest(mine); evicted == nil {
			return nil, nil, "max_conns"
		}
		c.remove(evicted)
	}
	if sc == nil {
		sc = &sourceConns{src: key, exempt: exempt}
		c.bySource[key] = sc
	}
	lc = &limitedConn{Conn: conn, lim: c, sc: sc}
	sc.conns = append(sc.conns, lc)
	c.open++
	return lc, evicted, ""
}

// heaviest is the oldest connection of the source that holds the most, if
// it holds at least two more than mine.
func (c *connLimiter) heaviest(mine int) *limitedConn {
	var top *sourceConns
	for _, sc := range c.bySource {
		if !sc.exempt && (top == nil || len(sc.conns) > len(top.conns)) {
			top = sc
		}
	}
	if top == nil || len(top.conns) < mine+2 {
		return nil
	}
	return top.conns[0]
}

// remove forgets lc, once; c.mu is held.
func (c *connLimiter) remove(lc *limitedConn) {
	if lc.gone {
		return
	}
	lc.gone = true
	c.open--
	sc := lc.sc
	for i, x := range sc.conns {
		if x == lc {
			sc.conns = append(sc.conns[:i], sc.conns[i+1:]...)
			break
		}
	}
	if len(sc.conns) == 0 && c.bySource[sc.src] == sc {
		delete(c.bySource, sc.src)
	}
}

// limitListener closes connections beyond the caps as soon as they are
// accepted, so a flood holds at most the caps' worth of file descriptors.
type limitListener struct {
	net.Listener
	lim     *connLimiter
	refused *prometheus.CounterVec
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var peer netip.Addr
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			peer = ap.Addr()
		}
		lc, evicted, why := l.lim.admit(peer, c)
		if why != "" {
			l.refused.WithLabelValues(why).Inc()
			reset(c)
			continue
		}
		if evicted != nil {
			l.refused.WithLabelValues("evicted").Inc()
			reset(evicted.Conn)
		}
		return lc, nil
	}
}

// reset closes c at once, with a reset: nothing lingers in TIME_WAIT.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

type limitedConn struct {
	net.Conn
	lim  *connLimiter
	sc   *sourceConns
	gone bool // no longer counted; under lim.mu
}

func (c *limitedConn) Close() error {
	c.lim.mu.Lock()
	c.lim.remove(c)
	c.lim.mu.Unlock()
	return c.Conn.Close()
}

// errSlowBody is what reading a body that fell behind returns; decode
// answers it with 408.
var errSlowBody = errors.New("request body arrived too slowly")

// maxDrain is how much of a body the handler left unread is read before
// answering, as net/http itself does, to keep the connection.
const maxDrain = 256 << 10

// limitBodies gives every request body a read deadline that moves with the
// data: BodyTimeout after the request began, plus a second for every
// BodyMinRate bytes received. Reading past it fails with errSlowBody, and
// the connection is closed after the answer.
func (s *Server) limitBodies(h http.Handler) http.Handler {
	lim := s.cfg.Limits
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r) // long polls are GETs without a body
			return
		}
		b := &deadlineBody{src: r.Body, rc: http.NewResponseController(w), start: time.Now(), grace: lim.BodyTimeout, rate: lim.BodyMinRate}
		if b.extend() != nil {
			h.ServeHTTP(w, r) // the connection has no deadlines (not HTTP/1)
			return
		}
		r.Body = b
		h.ServeHTTP(w, r)
		if !b.done {
			io.CopyN(io.Discard, b, maxDrain)
		}
		if b.slow {
			s.limitMetrics.slowBodies.Inc()
		}
	})
}

// deadlineBody is a request body whose connection read deadline moves
// forward as data arrives, and is lifted at the end of the body, so the
// rest of the request (a long answer) is not cut short.
type deadlineBody struct {
	src   io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	grace time.Duration
	rate  int
	read  int64
	done  bool // EOF or an error was seen
	slow  bool // the deadline passed
}

func (b *deadlineBody) extend() error {
	earned := time.Duration(float64(b.read) / float64(b.rate) * float64(time.Second))
	return b.rc.SetReadDeadline(b.start.Add(b.grace + earned))
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.slow {
		return 0, errSlowBody
	}
	n, err := b.src.Read(p)
	b.read += int64(n)
	switch {
	case err == io.EOF:
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.done, b.slow = true, true
		return n, errSlowBody
	case err != nil:
		b.done = true
	default:
		b.extend()
	}
	return n, err
}

func (b *deadlineBody) Close() error { return b.src.Close() }

// Per-source backoff of failed credentials: a source may fail authFree
// times; each further failure within authForget of the last answers 429
// and doubles its wait, from authBaseWait up to authMaxWait. A valid
// credential is never refused by it: the check comes after authentication,
// on failures only. At most authSources sources are remembered.
const (
	authFree     = 10
	authBaseWait = time.Second
	authMaxWait  = 5 * time.Minute
	authForget   = 15 * time.Minute
	authSources  = 10000
)

type authFailures struct {
	n    int
	last time.Time
}

type authLimiter struct {
	mu    sync.Mutex
	bySrc map[netip.Addr]*authFailures
	swept time.Time
}

func newAuthLimiter() *authLimiter {
	return &authLimiter{bySrc: map[netip.Addr]*authFailures{}}
}

// fail counts a failed credential from src at now and returns how long the
// source should wait before it tries again: 0 while it has failures left.
func (a *authLimiter) fail(src netip.Addr, now time.Time) time.Duration {
	src = sourceOf(src)
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.bySrc[src]
	if f != nil && now.Sub(f.last) > authForget {
		f.n = 0
	}
	if f == nil {
		a.makeRoom(now)
		f = &authFailures{}
		a.bySrc[src] = f
	}
	f.n++
	f.last = now
	if f.n <= authFree {
		return 0
	}
	wait := authMaxWait
	if k := f.n - authFree - 1; k < 20 {
		wait = min(authBaseWait<<k, authMaxWait)
	}
	return wait
}

// makeRoom keeps the table within authSources: forgotten sources go first
// (at most one sweep a minute); if none has been forgotten, an arbitrary
// one does.
func (a *authLimiter) makeRoom(now time.Time) {
	if len(a.bySrc) < authSources {
		return
	}
	if now.Sub(a.swept) > time.Minute {
		a.swept = now
		for k, f := range a.bySrc {
			if now.Sub(f.last) > authForget {
				delete(a.bySrc, k)
			}
		}
	}
	for k := range a.bySrc {
		if len(a.bySrc) < authSources {
			break
		}
		delete(a.bySrc, k)
	}
}

// backOff counts a failed credential of r against its source (the
// registration IP: the peer, or what a trusted proxy forwarded) and, once
// the source is in backoff, answers 429 with Retry-After and reports true.
func (s *Server) backOff(w http.ResponseWriter, r *http.Request) bool {
	wait := s.authFails.fail(s.clientIP(r), time.Now())
	if wait == 0 {
		return false
	}
	s.limitMetrics.authBackoff.Inc()
	w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
	writeError(w, http.StatusTooManyRequests, "too many failed credentials from this address; retry later (see Retry-After)")
	return true
}
