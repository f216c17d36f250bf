// Package timesync checks a node's clock against NTP servers (RFC 5905
// client mode) and reads whether the operating system disciplines it. It
// never sets the clock: that is the time daemon's job, and ChronyConfig
// writes a configuration for one.
//
// A Monitor queries the sources of the node's clock-sync duty, or the
// sources set on the node, every Interval; a node with neither sends no
// packet at all.
package timesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/jurisdiction"
	"github.com/meridian-vpn/meridian/timesync/syncstamp"
)

// Defaults of Config.
const (
	DefaultInterval      = 64 * time.Second
	DefaultTimeout       = 5 * time.Second
	DefaultNoSourceAfter = 10 * time.Minute
	// DefaultMaxDeviation is the deviation alarm threshold between a
	// node's own sources and its duty's reference sources.
	DefaultMaxDeviation     = 100 * time.Millisecond
	DefaultNoReferenceAfter = time.Hour
	// TraceWindow is how far back the largest deviation is kept.
	TraceWindow = 24 * time.Hour
)

// maxHold bounds how long a kiss-o'-death keeps a source from being queried.
const maxHold = 24 * time.Hour

// Config configures a Monitor.
type Config struct {
	// Sources, when set, replace the sources of the node's clock-sync duty
	// ("host" or "host:port", e.g. a cloud's own time service). They are
	// queried whether or not a duty applies.
	Sources []string
	// Interval is the time between rounds of queries (±10 % jitter).
	// Default 64 s.
	Interval time.Duration
	// Timeout bounds one query (and one plan request). Default 5 s, at
	// most Interval.
	Timeout time.Duration
	// NoSourceAfter is how long the node may go without a usable answer
	// before the no-source alarm. Default 10 min.
	NoSourceAfter time.Duration
	// KissBackoff is how long a source that sent a RATE kiss-o'-death is
	// left alone, doubling for each RATE in a row (up to a day); DENY and
	// RSTR leave it alone for a day. Default 16 × Interval.
	KissBackoff time.Duration
	// When Sources are set and a clock-sync duty applies, the duty's own
	// sources (NIC/NPL) are the reference: they are queried every
	// ReferenceInterval (default 16 × Interval) and the deviation between
	// the node's best source and the reference is kept for TraceWindow.
	// Over MaxDeviation (default 100 ms), or with no reference answering
	// for NoReferenceAfter (default 1 h), the clock is not traceable and
	// the trace alarm is raised.
	ReferenceInterval time.Duration
	MaxDeviation      time.Duration
	NoReferenceAfter  time.Duration
	Logger            *slog.Logger
}

// State is a node's sync state at one moment. It is the wire type, so that
// it crosses process boundaries unchanged; records and incidents carry it
// in brief (Monitor.Sync).
type State = api.TimeStatus

// Monitor watches a node's clock.
type Monitor struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	plan      api.TimePlan
	planKnown bool
	sources   []*source     // queried, in configured order
	since     time.Time     // when Run began or the sources last changed
	logged    api.TimeState // the state last logged, to log alarm changes once

	refs        []*source   // the duty's sources, when the node follows others
	refNext     time.Time   // when the reference is next queried
	refSince    time.Time   // when the references last changed
	devs        []deviation // within TraceWindow, oldest first
	loggedTrace string      // the trace alarm last logged
}

// deviation is one measurement of the node's best source against a
// reference.
type deviation struct {
	at  time.Time
	ref string
	d   time.Duration // best source's clock minus the reference's
}

// source is what one NTP server has said.
type source struct {
	name      string
	last      Sample    // the last usable answer
	ok        time.Time // when it arrived; zero: none yet
	err       string    // category of the last failure
	errAt     time.Time
	holdUntil time.Time // not queried before
	rates     int       // RATE kisses in a row
	badSince  time.Time // first of the current run of answers over the bound
}

// New returns a monitor; Run starts it.
func New(cfg Config) (*Monitor, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	cfg.Timeout = min(cfg.Timeout, cfg.Interval)
	if cfg.NoSourceAfter <= 0 {
		cfg.NoSourceAfter = DefaultNoSourceAfter
	}
	if cfg.KissBackoff <= 0 {
		cfg.KissBackoff = 16 * cfg.Interval
	}
	if cfg.ReferenceInterval <= 0 {
		cfg.ReferenceInterval = 16 * cfg.Interval
	}
	if cfg.MaxDeviation <= 0 {
		cfg.MaxDeviation = DefaultMaxDeviation
	}
	if cfg.NoReferenceAfter <= 0 {
		cfg.NoReferenceAfter = DefaultNoReferenceAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for i, s := range cfg.Sources {
		if _, _, err := splitSource(s); err != nil {
			return nil, err
		}
		if slices.Contains(cfg.Sources[:i], s) {
			return nil, fmt.Errorf("NTP source %q is given twice", s)
		}
	}
	cfg.Sources = slices.Clone(cfg.Sources)
	m := &Monitor{cfg: cfg, log: cfg.Logger}
	m.setSources(cfg.Sources)
	return m, nil
}

// Run queries the node's sources every Interval until ctx ends. Before
// each round it asks plan what the node's duties require; when plan fails
// the last answer stands (and until one arrives the node has no duty it
// knows of). A state that raises or clears an alarm is logged. Run a
// monitor once at a time: it watches one node.
func (m *Monitor) Run(ctx context.Context, plan func(context.Context) (api.TimePlan, error)) {
	m.mu.Lock()
	m.since = time.Now() // the no-source time counts from here
	m.mu.Unlock()
	for {
		pctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		p, err := plan(pctx)
		cancel()
		if err == nil {
			m.setPlan(p)
		} else if ctx.Err() == nil {
			m.log.Debug("clock sync plan unavailable; keeping the last one", "err", err)
		}
		m.round(ctx)
		m.referenceRound(ctx)
		if ctx.Err() != nil {
			return
		}
		m.logAlarm(m.State())
		t := time.NewTimer(jitter(m.cfg.Interval))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// jitter spreads d by ±10 %, so that nodes started together do not query
// together.
func jitter(d time.Duration) time.Duration {
	if d < 10 {
		return d
	}
	return d - d/10 + rand.N(d/5)
}

func (m *Monitor) setPlan(p api.TimePlan) {
	m.mu.Lock()
	defer m.mu.Unlock()
	same := m.planKnown && m.plan.Required == p.Required && m.plan.MaxOffset == p.MaxOffset && slices.Equal(m.plan.Sources, p.Sources)
	m.plan, m.planKnown = p, true
	if len(m.cfg.Sources) == 0 {
		m.setSources(p.Sources)
	}
	m.setReferences()
	if !same {
		m.log.Info("clock sync plan", "required", p.Required, "why", p.Why, "sources", m.names(), "set_on_node", len(m.cfg.Sources) > 0)
	}
}

// setSources makes names the queried sources, keeping what is known of
// the ones that stay. m.mu is held (or m is new).
func (m *Monitor) setSources(names []string) {
	if slices.Equal(m.names(), names) {
		return
	}
	var next []*source
	for _, n := range names {
		i := slices.IndexFunc(m.sources, func(s *source) bool { return s.name == n })
		if i >= 0 {
			next = append(next, m.sources[i])
		} else {
			next = append(next, &source{name: n})
		}
	}
	m.sources, m.since = next, time.Now()
}

func (m *Monitor) names() []string {
	var out []string
	for _, s := range m.sources {
		out = append(out, s.name)
	}
	return out
}

// round queries every source that is not held back, at once.
func (m *Monitor) round(ctx context.Context) {
	now := time.Now()
	m.mu.Lock()
	var due []*source
	for _, s := range m.sources {
		if !now.Before(s.holdUntil) {
			due = append(due, s)
		}
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range due {
		wg.Go(func() {
			smp, err := Query(ctx, s.name, m.cfg.Timeout)
			if ctx.Err() == nil {
				m.record(s, smp, err)
			}
		})
	}
	wg.Wait()
}

func (m *Monitor) record(s *source, smp Sample, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		if abs(smp.Offset) <= m.maxOffset() {
			s.badSince = time.Time{}
		} else if s.badSince.IsZero() {
			s.badSince = smp.At
		}
		s.last, s.ok, s.rates = smp, smp.At, 0
		return
	}
	now := time.Now()
	s.err, s.errAt = category(err), now
	var kiss *KissError
	if !errors.As(err, &kiss) {
		return
	}
	var hold time.Duration
	switch kiss.Code {
	case "RATE":
		s.rates++
		hold = m.cfg.KissBackoff
		for i := 1; i < s.rates && hold < maxHold; i++ {
			hold *= 2
		}
		hold = min(hold, maxHold)
	case "DENY", "RSTR":
		hold = maxHold
	default:
		return // informational: this answer is not used, the next may be
	}
	s.holdUntil = now.Add(hold)
	m.log.Warn("NTP server sent a kiss-o'-death; not querying it for a while", "source", s.name, "code", kiss.Code, "until", s.holdUntil.Format(time.RFC3339))
}

// category names the kind of a query failure, for people and dashboards.
func category(err error) string {
	var kiss *KissError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &kiss):
		return "kiss " + kiss.Code
	case errors.Is(err, ErrUnsynchronised):
		return "unsynchronised"
	case errors.Is(err, ErrBogus):
		return "bogus reply"
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	}
	return "network"
}

func (m *Monitor) maxOffset() time.Duration {
	if m.plan.MaxOffset > 0 {
		return m.plan.MaxOffset
	}
	return jurisdiction.DefaultMaxOffset
}

func abs(d time.Duration) time.Duration { return max(d, -d) }

// State returns the node's sync state now: its plan, what each source last
// said, the best source's offset, the alarm if any, and the kernel's view.
func (m *Monitor) State() State {
	k := readKernel()
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	st := State{
		At: now, Required: m.plan.Required, Why: m.plan.Why, Overridden: len(m.cfg.Sources) > 0,
		MaxOffset: m.maxOffset(), Sources: []api.TimeSource{}, Kernel: k,
	}
	var best *source
	last := m.since // the latest usable answer, or when watching began
	for _, s := range m.sources {
		st.Sources = append(st.Sources, s.view())
		if s.ok.After(last) {
			last = s.ok
		}
		if !s.ok.IsZero() && now.Sub(s.ok) <= m.cfg.NoSourceAfter && (best == nil || s.last.distance() < best.last.distance()) {
			best = s
		}
	}
	switch {
	case len(m.sources) == 0 && !m.planKnown:
		st.State = api.TimeUnknown
	case len(m.sources) == 0:
		st.State = api.TimeNotRequired
	case best != nil:
		st.Best, st.Offset, st.State = best.name, best.last.Offset, api.TimeSynced
		if abs(best.last.Offset) > st.MaxOffset {
			st.State, st.Since = api.TimeOffsetAlarm, best.badSince
			if st.Since.IsZero() { // the bound has changed since
				st.Since = best.ok
			}
		}
	case now.Sub(last) > m.cfg.NoSourceAfter:
		st.State, st.Since = api.TimeNoSource, last.Add(m.cfg.NoSourceAfter)
	default:
		st.State = api.TimeWaiting
	}
	if len(m.refs) > 0 {
		st.Trace = m.traceLocked(now)
	}
	return st
}

// Sync is the node's sync state now in brief, as records and incidents
// carry it. A nil monitor (the node's clock is not watched) gives the
// unwatched state, never a synced one.
func (m *Monitor) Sync() api.ClockSync {
	if m == nil {
		return syncstamp.UnwatchedAt(time.Now())
	}
	return m.State().Sync()
}

func (s *source) view() api.TimeSource {
	v := api.TimeSource{Source: s.name, LastError: s.err, LastErrorAt: s.errAt, HoldUntil: s.holdUntil}
	if !s.ok.IsZero() {
		v.Offset, v.Delay, v.Stratum, v.RefID, v.Leap, v.LastSuccess = s.last.Offset, s.last.Delay, s.last.Stratum, s.last.RefID, s.last.Leap.String(), s.ok
	}
	return v
}

// Alarm names the alarm a state raises: "offset", "no-source", or "" for
// none.
func Alarm(s api.TimeState) string {
	switch s {
	case api.TimeOffsetAlarm:
		return "offset"
	case api.TimeNoSource:
		return "no-source"
	}
	return ""
}

// logAlarm logs an alarm when it starts and when it ends.
func (m *Monitor) logAlarm(st State) {
	m.mu.Lock()
	prev, names := m.logged, m.names()
	m.logged = st.State
	m.mu.Unlock()
	m.logTrace(st.Trace)
	if Alarm(prev) == Alarm(st.State) {
		return
	}
	if a := Alarm(prev); a != "" {
		m.log.Warn("clock alarm ended", "alarm", a, "state", st.State, "best", st.Best, "offset", st.Offset)
	}
	switch Alarm(st.State) {
	case "offset":
		m.log.Warn("clock alarm started: offset over the bound", "alarm", "offset", "offset", st.Offset, "max_offset", st.MaxOffset, "best", st.Best, "required", st.Required)
	case "no-source":
		m.log.Warn("clock alarm started: no NTP source answered", "alarm", "no-source", "sources", names, "since", st.Since.Format(time.RFC3339), "required", st.Required)
	}
}
