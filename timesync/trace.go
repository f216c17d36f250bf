package timesync

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/timesync/syncstamp"
)

// setReferences makes the duty's sources the reference when the node
// follows sources of its own: CERT-In direction (i) lets such a node use
// another time source provided it does not deviate from NIC and NPL. m.mu
// is held.
func (m *Monitor) setReferences() {
	var names []string
	if len(m.cfg.Sources) > 0 && m.plan.Required {
		for _, n := range m.plan.Sources {
			if !slices.Contains(m.cfg.Sources, n) {
				names = append(names, n)
			}
		}
	}
	var cur []string
	for _, r := range m.refs {
		cur = append(cur, r.name)
	}
	if slices.Equal(cur, names) {
		return
	}
	m.refs = nil
	for _, n := range names {
		m.refs = append(m.refs, &source{name: n})
	}
	m.devs, m.refSince, m.refNext = nil, time.Now(), time.Time{}
}

// referenceRound queries the references, if they are due, and measures
// the deviation of the node's best source from each that answers.
func (m *Monitor) referenceRound(ctx context.Context) {
	now := time.Now()
	m.mu.Lock()
	refs := slices.Clone(m.refs)
	due := len(refs) > 0 && !now.Before(m.refNext)
	if due {
		m.refNext = now.Add(jitter(m.cfg.ReferenceInterval))
	}
	m.mu.Unlock()
	if !due {
		return
	}
	var wg sync.WaitGroup
	for _, r := range refs {
		wg.Go(func() {
			smp, err := Query(ctx, r.name, m.cfg.Timeout)
			if ctx.Err() == nil {
				m.recordReference(r, smp, err)
			}
		})
	}
	wg.Wait()
}

func (m *Monitor) recordReference(r *source, smp Sample, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		r.err, r.errAt = category(err), time.Now()
		return
	}
	r.last, r.ok = smp, smp.At
	best := m.bestLocked(smp.At)
	if best == nil {
		return // nothing to compare: the node's own sources are silent
	}
	m.devs = append(m.devs, deviation{at: smp.At, ref: r.name, d: best.last.Offset - smp.Offset})
	m.pruneLocked(smp.At)
}

// bestLocked is the node's source whose last answer counts at now, as
// State chooses it; nil if none. m.mu is held.
func (m *Monitor) bestLocked(now time.Time) *source {
	var best *source
	for _, s := range m.sources {
		if !s.ok.IsZero() && now.Sub(s.ok) <= m.cfg.NoSourceAfter && (best == nil || s.last.distance() < best.last.distance()) {
			best = s
		}
	}
	return best
}

func (m *Monitor) pruneLocked(now time.Time) {
	i := 0
	for i < len(m.devs) && now.Sub(m.devs[i].at) > TraceWindow {
		i++
	}
	m.devs = m.devs[i:]
}

// traceLocked sums up traceability at now. m.mu is held.
func (m *Monitor) traceLocked(now time.Time) *api.TimeTrace {
	m.pruneLocked(now)
	t := &api.TimeTrace{State: syncstamp.NotTraceable, Window: TraceWindow, Bound: m.cfg.MaxDeviation, Measurements: len(m.devs)}
	for _, r := range m.refs {
		if r.ok.After(t.LastAnswer) {
			t.LastAnswer = r.ok
		}
	}
	var over time.Time // the first measurement over the bound in the window
	for _, d := range m.devs {
		if abs(d.d) >= abs(t.MaxDeviation) {
			t.MaxDeviation = abs(d.d)
		}
		if abs(d.d) > t.Bound && over.IsZero() {
			over = d.at
		}
	}
	if n := len(m.devs); n > 0 {
		t.Deviation, t.Reference = m.devs[n-1].d, m.devs[n-1].ref
	}
	last := t.LastAnswer
	if m.refSince.After(last) {
		last = m.refSince
	}
	switch {
	case now.Sub(last) > m.cfg.NoReferenceAfter:
		t.Alarm, t.AlarmSince = "no-reference", last.Add(m.cfg.NoReferenceAfter)
	case !over.IsZero():
		t.Alarm, t.AlarmSince = "deviation", over
	case len(m.devs) > 0:
		t.State = syncstamp.Traceable
	}
	return t
}

// logTrace logs a trace alarm when it starts and when it ends.
func (m *Monitor) logTrace(t *api.TimeTrace) {
	alarm := ""
	if t != nil {
		alarm = t.Alarm
	}
	m.mu.Lock()
	prev := m.loggedTrace
	m.loggedTrace = alarm
	m.mu.Unlock()
	if prev == alarm {
		return
	}
	if prev != "" {
		m.log.Warn("clock trace alarm ended", "alarm", prev)
	}
	switch alarm {
	case "deviation":
		m.log.Warn("clock trace alarm started: the node's sources deviate from the reference over the bound", "alarm", alarm,
			"max_deviation", t.MaxDeviation, "bound", t.Bound, "reference", t.Reference)
	case "no-reference":
		m.log.Warn("clock trace alarm started: no reference source answered", "alarm", alarm, "since", t.AlarmSince.Format(time.RFC3339))
	}
}
