package timesync_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/timesync"
	"github.com/meridian-vpn/meridian/timesync/ntptest"
)

// logBuffer collects a monitor's log.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs a monitor with a fast interval until the test ends.
func start(t *testing.T, cfg timesync.Config, plan api.TimePlan) (*timesync.Monitor, *logBuffer) {
	t.Helper()
	m, logs, _ := startCounting(t, cfg, plan)
	return m, logs
}

// startCounting is start, also counting the monitor's rounds: each asks for
// the plan first, so once plans reads n+1, round n has ended.
func startCounting(t *testing.T, cfg timesync.Config, plan api.TimePlan) (*timesync.Monitor, *logBuffer, *atomic.Int64) {
	t.Helper()
	plans := new(atomic.Int64)
	logs := &logBuffer{}
	if cfg.Interval == 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	cfg.Timeout = 500 * time.Millisecond
	if cfg.NoSourceAfter == 0 {
		cfg.NoSourceAfter = time.Hour
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	m, err := timesync.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx, func(context.Context) (api.TimePlan, error) { plans.Add(1); return plan, nil })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("monitor log:\n%s", logs)
		}
	})
	return m, logs, plans
}

// await returns the monitor's state once ok accepts it, failing the test
// after 10 s.
func await(t *testing.T, m *timesync.Monitor, what string, ok func(timesync.State) bool) timesync.State {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := m.State()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s; state: %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func inState(s api.TimeState) func(timesync.State) bool {
	return func(st timesync.State) bool { return st.State == s }
}

func certIn(sources ...string) api.TimePlan {
	return api.TimePlan{Required: true, Why: "IN / cert-in-2022 / direction (i)", Sources: sources, MaxOffset: 100 * time.Millisecond}
}

func abs(d time.Duration) time.Duration { return max(d, -d) }

func TestQueryChrony(t *testing.T) {
	c := ntptest.StartChrony(t)
	s, err := timesync.Query(context.Background(), c.Addr, time.Second)
	if err != nil {
		t.Fatalf("query: %v\n%s", err, c.Log())
	}
	// chronyd serves this host's own clock.
	if abs(s.Offset) > 50*time.Millisecond || s.Stratum != 8 || s.RefID != "127.127.1.1" || s.Leap != timesync.LeapNone {
		t.Fatalf("got %+v, want a small offset from a stratum 8 local clock", s)
	}
}

// TestMonitorChrony follows a node with the clock-sync duty against a real
// NTP server: in sync while chronyd answers, then the no-source alarm once
// it has been gone for NoSourceAfter, logged when it starts.
func TestMonitorChrony(t *testing.T) {
	c := ntptest.StartChrony(t)
	m, logs := start(t, timesync.Config{NoSourceAfter: time.Second}, certIn(c.Addr))
	st := await(t, m, "sync with chronyd", inState(api.TimeSynced))
	if !st.Required || st.Overridden || st.Best != c.Addr || abs(st.Offset) > st.MaxOffset || len(st.Sources) != 1 {
		t.Fatalf("got %+v", st)
	}
	if src := st.Sources[0]; src.Stratum != 8 || src.RefID != "127.127.1.1" || src.Leap != "none" || src.LastSuccess.IsZero() || src.Delay <= 0 {
		t.Fatalf("source: %+v", src)
	}
	if !st.Synced() || st.At.IsZero() {
		t.Fatalf("got %+v", st)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	if v := metric(t, reg, "meridian_time_synced", ""); v != 1 {
		t.Errorf("meridian_time_synced = %v, want 1", v)
	}
	if v := metric(t, reg, "meridian_time_offset_seconds", c.Addr); abs(time.Duration(v*1e9)) > st.MaxOffset {
		t.Errorf("meridian_time_offset_seconds{source=%q} = %v", c.Addr, v)
	}

	c.Stop()
	stopped := time.Now()
	st = await(t, m, "the no-source alarm", inState(api.TimeNoSource))
	if e := st.Sources[0].LastError; st.Best != "" || st.Since.Before(stopped.Add(-time.Second)) || e != "refused" && e != "timeout" {
		t.Fatalf("got %+v", st)
	}
	if v := metric(t, reg, "meridian_time_alarm", "no-source"); v != 1 {
		t.Errorf(`meridian_time_alarm{kind="no-source"} = %v, want 1`, v)
	}
	await(t, m, "the alarm in the log", func(timesync.State) bool {
		return strings.Contains(logs.String(), "clock alarm started: no NTP source answered")
	})
}

// metric returns the value of the gauge name whose label is label ("" for
// a gauge without labels).
func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 0 && label == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{%q}", name, label)
	return 0
}

// TestMonitorOffsetAlarm raises the offset alarm against a server 2 s
// ahead, and clears it when the server agrees again; both are logged.
func TestMonitorOffsetAlarm(t *testing.T) {
	var skew atomic.Int64
	skew.Store(int64(2 * time.Second))
	r := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{Skew: time.Duration(skew.Load())}} })
	m, logs := start(t, timesync.Config{}, certIn(r.Addr))
	st := await(t, m, "the offset alarm", inState(api.TimeOffsetAlarm))
	if st.Offset < 1900*time.Millisecond || st.Offset > 2100*time.Millisecond || st.Since.IsZero() || st.Best != r.Addr {
		t.Fatalf("got %+v", st)
	}
	await(t, m, "the alarm in the log", func(timesync.State) bool {
		return strings.Contains(logs.String(), "clock alarm started: offset over the bound")
	})
	skew.Store(0)
	await(t, m, "the clock back in sync", inState(api.TimeSynced))
	await(t, m, "the alarm's end in the log", func(timesync.State) bool {
		return strings.Contains(logs.String(), "clock alarm ended")
	})
}

// TestMonitorUnsynchronised: answers from a server that says it is not
// synchronised (leap indicator 3, or stratum 16) are not used, however
// close or far its clock.
func TestMonitorUnsynchronised(t *testing.T) {
	leap := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{Leap: 3, Skew: 5 * time.Second}} })
	s16 := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{Stratum: 16}} })
	m, _ := start(t, timesync.Config{}, certIn(leap.Addr, s16.Addr))
	st := await(t, m, "both sources refused", func(st timesync.State) bool {
		return len(st.Sources) == 2 && st.Sources[0].LastError != "" && st.Sources[1].LastError != ""
	})
	for _, src := range st.Sources {
		if src.LastError != "unsynchronised" || !src.LastSuccess.IsZero() {
			t.Errorf("source %+v: want refused as unsynchronised", src)
		}
	}
	if st.State != api.TimeWaiting || st.Best != "" {
		t.Fatalf("got %+v, want waiting with no best source", st)
	}

	// Beside a good source, the unsynchronised one is ignored.
	good := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{}} })
	m, _ = start(t, timesync.Config{}, certIn(leap.Addr, good.Addr))
	st = await(t, m, "sync with the good source", inState(api.TimeSynced))
	if st.Best != good.Addr || abs(st.Offset) > 100*time.Millisecond {
		t.Fatalf("got %+v", st)
	}
}

// TestMonitorKissOfDeath: a server that answers RATE is left alone.
func TestMonitorKissOfDeath(t *testing.T) {
	r := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{Kiss: "RATE"}} })
	m, logs, plans := startCounting(t, timesync.Config{KissBackoff: time.Hour}, certIn(r.Addr))
	st := await(t, m, "the kiss-o'-death", func(st timesync.State) bool { return len(st.Sources) == 1 && st.Sources[0].LastError != "" })
	if src := st.Sources[0]; src.LastError != "kiss RATE" || src.HoldUntil.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("source %+v: want held back for an hour", src)
	}
	// Twenty whole rounds after the kiss, however long they take.
	for want, deadline := plans.Load()+21, time.Now().Add(30*time.Second); plans.Load() < want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d rounds in 30 s", plans.Load()-want+21)
		}
	}
	if n := r.Requests(); n != 1 {
		t.Fatalf("%d requests after a RATE kiss-o'-death, want 1", n)
	}
	if !strings.Contains(logs.String(), "kiss-o'-death") {
		t.Fatalf("not logged:\n%s", logs)
	}
}

// TestQuerySpoofedReply: a reply that does not echo the request's
// transmit timestamp is ignored, as a blind spoofer's would be.
func TestQuerySpoofedReply(t *testing.T) {
	r := ntptest.Respond(t, func(int) []ntptest.Reply {
		return []ntptest.Reply{{WrongOrigin: true, Skew: time.Hour}, {}}
	})
	s, err := timesync.Query(context.Background(), r.Addr, time.Second)
	if err != nil || abs(s.Offset) > 100*time.Millisecond {
		t.Fatalf("got %+v, %v: want the genuine reply", s, err)
	}
	spoof := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{WrongOrigin: true, Skew: time.Hour}} })
	if s, err := timesync.Query(context.Background(), spoof.Addr, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %+v, %v: want a timeout", s, err)
	}
}

// TestMonitorNoDuty: a node without the duty and without sources of its
// own queries nothing; with sources set on it, it queries them.
func TestMonitorNoDuty(t *testing.T) {
	m, err := timesync.New(timesync.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if st := m.State(); st.State != api.TimeUnknown {
		t.Fatalf("before any plan: got %+v", st)
	}
	m, _ = start(t, timesync.Config{}, api.TimePlan{Why: "SG / none: no clock-sync duty"})
	st := await(t, m, "not required", inState(api.TimeNotRequired))
	if st.Required || len(st.Sources) != 0 || st.Synced() {
		t.Fatalf("got %+v", st)
	}

	r := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{}} })
	m, _ = start(t, timesync.Config{Sources: []string{r.Addr}}, api.TimePlan{})
	st = await(t, m, "sync with the node's own source", inState(api.TimeSynced))
	if st.Required || !st.Overridden || st.Best != r.Addr {
		t.Fatalf("got %+v", st)
	}
}

func TestNewRefusesBadSources(t *testing.T) {
	for _, srcs := range [][]string{{"bad host"}, {"time.example.org:0"}, {"a.example", "a.example"}} {
		if _, err := timesync.New(timesync.Config{Sources: srcs}); err == nil {
			t.Errorf("%q accepted", srcs)
		}
	}
}
