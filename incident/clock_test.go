package incident

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/timesync/syncstamp"
)

// TestClockLines pins how reports word the control node's clock stamps,
// and that they stand outside the form's numbered items.
func TestClockLines(t *testing.T) {
	at := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		s    syncstamp.Stamp
		want string
	}{
		{syncstamp.Stamp{At: at, State: syncstamp.Synced, Source: "samay1.nic.in", Offset: 2100 * time.Microsecond, KernelSynced: true},
			"Clock at notice: synced, offset +2.1 ms from samay1.nic.in, kernel synced (control node, 2026-05-01 09:00:00 UTC).\n"},
		{syncstamp.Stamp{At: at, State: syncstamp.OffsetAlarm, Source: "time.nplindia.org", Offset: -1250 * time.Millisecond},
			"Clock at notice: NOT in sync (offset alarm), offset -1.250 s from time.nplindia.org (control node, 2026-05-01 09:00:00 UTC).\n"},
		{syncstamp.Stamp{At: at, State: syncstamp.Synced, Source: "127.0.0.1:123", Offset: -35 * time.Microsecond},
			"Clock at notice: synced, offset -35 µs from 127.0.0.1:123 (control node, 2026-05-01 09:00:00 UTC).\n"},
		{syncstamp.Stamp{At: at, State: syncstamp.NoSource},
			"Clock at notice: NOT in sync (no source): no NTP source had answered for too long (control node, 2026-05-01 09:00:00 UTC).\n"},
		{syncstamp.UnwatchedAt(at), "Clock at notice: not watched: the node runs no time monitor (control node, 2026-05-01 09:00:00 UTC).\n"},
	} {
		if got := ClockLines(&c.s, nil); got != c.want {
			t.Errorf("%s: got %q, want %q", c.s.State, got, c.want)
		}
	}
	if ClockLines(nil, nil) != "" {
		t.Error("lines for stamps that were not kept")
	}

	notice, confirm := syncstamp.Stamp{At: at, State: syncstamp.Synced, Source: "samay2.nic.in"}, syncstamp.UnwatchedAt(at.Add(time.Hour))
	i := Incident{ID: 4, Type: 8, State: Noticed, Noticed: at, Deadline: at.Add(6 * time.Hour), Version: 1, NoticeClock: &notice, ConfirmClock: &confirm}
	text := NewReport(i, at.Add(time.Minute)).Text()
	head, form, ok := strings.Cut(text, "\n1. ")
	if !ok || !strings.Contains(head, "\nClock at notice: synced, offset +0 µs from samay2.nic.in") ||
		!strings.Contains(head, "\nClock at confirmation: not watched") || strings.Contains(form, "Clock at") {
		t.Fatalf("report text:\n%s", text)
	}
}

// TestOrderAlerts: an open order raises "one-hour-left" within its last
// hour and "overdue" after its due time, each once; an answered order
// raises none, and one first seen overdue only "overdue".
func TestOrderAlerts(t *testing.T) {
	due := time.Date(2026, 5, 1, 18, 0, 0, 0, time.UTC)
	open := Order{ID: 1, State: OrderOpen, Received: due.Add(-24 * time.Hour), Due: due}
	answered := Order{ID: 2, State: OrderAnswered, Received: due.Add(-24 * time.Hour), Due: due, Answered: due.Add(-2 * time.Hour)}
	if got := DueOrders([]Order{open, answered}, due.Add(-2*time.Hour)); len(got) != 0 {
		t.Fatalf("two hours before: %+v", got)
	}
	got := DueOrders([]Order{open, answered}, due.Add(-30*time.Minute))
	if len(got) != 1 || got[0].Order != 1 || got[0].Kind != OneHourLeft || got[0].SecondsLeft != 1800 || got[0].TimeLeft != "30m left" || !got[0].Due.Equal(due) {
		t.Fatalf("30 minutes before: %+v", got)
	}
	open.Alerts = []FiredAlert{{Kind: OneHourLeft, At: due.Add(-30 * time.Minute)}}
	if got := DueOrders([]Order{open}, due.Add(-10*time.Minute)); len(got) != 0 {
		t.Fatalf("one-hour-left again: %+v", got)
	}
	got = DueOrders([]Order{open, answered}, due.Add(time.Minute))
	if len(got) != 1 || got[0].Kind != Overdue || got[0].TimeLeft != "overdue by 1m" {
		t.Fatalf("after the due time: %+v", got)
	}
	open.Alerts = nil
	if got := DueOrders([]Order{open}, due.Add(3*time.Hour)); len(got) != 1 || got[0].Kind != Overdue {
		t.Fatalf("first seen overdue: %+v", got)
	}
}
