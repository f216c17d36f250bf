package timesync_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/timesync"
	"github.com/meridian-vpn/meridian/timesync/ntptest"
	"github.com/meridian-vpn/meridian/timesync/syncstamp"
)

// A node told to follow its own source (a cloud's time service, here a
// scripted responder) under a clock-sync duty naming NIC/NPL (here the
// real chronyd on loopback as the reference): the monitor measures the
// deviation between them, and stamps say whether it stayed within bound.
func TestMonitorTraceable(t *testing.T) {
	ref := ntptest.StartChrony(t)
	own := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{Skew: 20 * time.Millisecond}} })
	m, _ := start(t, timesync.Config{Sources: []string{own.Addr}, ReferenceInterval: 100 * time.Millisecond}, certIn(ref.Addr))
	st := await(t, m, "a deviation measured", func(st timesync.State) bool { return st.Trace != nil && st.Trace.Measurements >= 2 })
	tr := st.Trace
	if tr.State != syncstamp.Traceable || tr.Reference != ref.Addr || tr.Alarm != "" || tr.Bound != 100*time.Millisecond || tr.Window != 24*time.Hour ||
		tr.MaxDeviation < 10*time.Millisecond || tr.MaxDeviation > 40*time.Millisecond || tr.Deviation < 10*time.Millisecond {
		t.Fatalf("trace %+v", tr)
	}
	// Only the node's own source counts for its offset.
	if st.Best != own.Addr || len(st.Sources) != 1 || !st.Overridden {
		t.Fatalf("state %+v", st)
	}
	stamp := st.Sync()
	if stamp.Trace != syncstamp.Traceable || stamp.TraceWithin != tr.MaxDeviation || stamp.TraceReference != ref.Addr ||
		!strings.Contains(stamp.String(), "traceable within ") || !strings.Contains(stamp.String(), " ms of "+ref.Addr) {
		t.Fatalf("stamp %+v: %s", stamp, stamp)
	}
	// The reference is queried at its own, lower rate.
	if n := own.Requests(); n < 3 {
		t.Fatalf("own source queried %d times", n)
	}
}

// Over the bound: the deviation alarm, logged and exported, and stamps
// say "not traceable". A reference that stops answering raises the
// no-reference alarm.
func TestMonitorNotTraceable(t *testing.T) {
	ref := ntptest.StartChrony(t)
	own := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{Skew: 300 * time.Millisecond}} })
	m, logs := start(t, timesync.Config{Sources: []string{own.Addr}, ReferenceInterval: 100 * time.Millisecond, NoReferenceAfter: time.Second},
		api.TimePlan{Required: true, Why: "IN / cert-in-2022 / direction (i)", Sources: []string{ref.Addr}, MaxOffset: time.Second})
	st := await(t, m, "the deviation alarm", func(st timesync.State) bool { return st.Trace != nil && st.Trace.Alarm == "deviation" })
	if st.Trace.State != syncstamp.NotTraceable || st.Trace.MaxDeviation < 250*time.Millisecond || st.Trace.AlarmSince.IsZero() {
		t.Fatalf("trace %+v", st.Trace)
	}
	// The node's own offset is within the duty's 1 s bound: synced, but
	// not traceable.
	if st.State != api.TimeSynced {
		t.Fatalf("state %s", st.State)
	}
	if stamp := st.Sync(); stamp.Trace != syncstamp.NotTraceable || stamp.TraceWithin != 0 || !strings.Contains(stamp.String(), "NOT traceable") {
		t.Fatalf("stamp %+v: %s", stamp, stamp)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	if v := metric(t, reg, "meridian_time_alarm", "deviation"); v != 1 {
		t.Errorf(`meridian_time_alarm{kind="deviation"} = %v`, v)
	}
	await(t, m, "the alarm in the log", func(timesync.State) bool {
		return strings.Contains(logs.String(), "clock trace alarm started: the node's sources deviate from the reference over the bound")
	})

	ref.Stop()
	await(t, m, "the no-reference alarm", func(st timesync.State) bool { return st.Trace != nil && st.Trace.Alarm == "no-reference" })
}

// A node that follows the duty's sources themselves is synced to the
// reference; with no duty, nothing is said of traceability.
func TestMonitorSyncedToReference(t *testing.T) {
	ref := ntptest.StartChrony(t)
	m, _ := start(t, timesync.Config{}, certIn(ref.Addr))
	st := await(t, m, "sync", inState(api.TimeSynced))
	if st.Trace != nil || st.Sync().Trace != syncstamp.SyncedToReference || !strings.Contains(st.Sync().String(), "synced to the reference") {
		t.Fatalf("state %+v, stamp %+v", st, st.Sync())
	}
	own := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{}} })
	m2, _ := start(t, timesync.Config{Sources: []string{own.Addr}}, api.TimePlan{})
	st = await(t, m2, "sync without a duty", inState(api.TimeSynced))
	if st.Trace != nil || st.Sync().Trace != "" {
		t.Fatalf("no duty: state %+v", st)
	}
}
