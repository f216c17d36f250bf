package gateway

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/timesync"
	"github.com/meridian-vpn/meridian/timesync/ntptest"
	"github.com/meridian-vpn/meridian/wg"
)

// TestSessionRecordsCarryTheClock: with a time monitor (against a loopback
// NTP server), each record a gateway makes carries its sync state: the
// opening record at its start, the closing one at its end, as the state
// was then; without a monitor, none.
func TestSessionRecordsCarryTheClock(t *testing.T) {
	var skew atomic.Int64
	skew.Store(int64(30 * time.Millisecond))
	ntp := ntptest.Respond(t, func(int) []ntptest.Reply { return []ntptest.Reply{{Skew: time.Duration(skew.Load())}} })
	m, err := timesync.New(timesync.Config{Sources: []string{ntp.Addr}, Interval: 50 * time.Millisecond, Timeout: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx, func(context.Context) (api.TimePlan, error) { return api.TimePlan{}, nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	await := func(want api.TimeState) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); m.State().State != want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the monitor did not reach %s: %+v", want, m.State())
			}
		}
	}
	stamp := func(what string, c *api.ClockSync, state api.TimeState, lo, hi time.Duration) {
		t.Helper()
		if c == nil || c.State != state || c.Source != ntp.Addr || c.Offset < lo || c.Offset > hi {
			t.Fatalf("%s: clock %+v, want %s from %s, offset %s..%s", what, c, state, ntp.Addr, lo, hi)
		}
	}
	await(api.TimeSynced)

	g := &Gateway{cfg: Config{Clock: m}}
	tt := newTrackerTest(t, sessionConfig{clock: g.clockStamp})
	p := recordedPeer(t, 2)
	tt.tr.update([]api.Peer{p}, nil)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	recs := tt.records()
	if len(recs) != 1 {
		t.Fatalf("records at the first handshake: %+v", recs)
	}
	stamp("opening record", recs[0].Clock, api.TimeSynced, 25*time.Millisecond, 35*time.Millisecond)

	// A new endpoint: the old session closes and a new one opens, both
	// stamped now.
	tt.now = tt.now.Add(time.Minute)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep2}})
	recs = tt.records()
	if len(recs) != 2 || recs[0].End.IsZero() || !recs[1].End.IsZero() {
		t.Fatalf("records when the endpoint changed: %+v", recs)
	}
	stamp("record closed by roaming", recs[0].Clock, api.TimeSynced, 25*time.Millisecond, 35*time.Millisecond)
	stamp("record opened by roaming", recs[1].Clock, api.TimeSynced, 25*time.Millisecond, 35*time.Millisecond)

	// The clock goes wrong; the session ends without handshakes: its
	// closing record says so.
	skew.Store(int64(2 * time.Second))
	await(api.TimeOffsetAlarm)
	tt.now = tt.now.Add(rejectAfter + time.Second)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now.Add(-rejectAfter - time.Second), endpoint: ep2}})
	recs = tt.records()
	if len(recs) != 1 || recs[0].End.IsZero() {
		t.Fatalf("records when the session ended: %+v", recs)
	}
	stamp("closing record", recs[0].Clock, api.TimeOffsetAlarm, 1900*time.Millisecond, 2100*time.Millisecond)

	// Without a monitor, no stamp.
	bare := &Gateway{}
	tt = newTrackerTest(t, sessionConfig{clock: bare.clockStamp})
	tt.tr.update([]api.Peer{p}, nil)
	tt.tr.observe(map[wg.Key]peerStatus{p.PublicKey: {handshake: tt.now, endpoint: ep1}})
	if recs := tt.records(); len(recs) != 1 || recs[0].Clock != nil {
		t.Fatalf("records of a gateway without a time monitor: %+v", recs)
	}
}
