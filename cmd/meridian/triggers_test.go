package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

func TestTraceLine(t *testing.T) {
	for _, tt := range []struct {
		tr   api.TimeTrace
		want string
	}{
		{api.TimeTrace{Reference: "samay1.nic.in", MaxDeviation: 12 * time.Millisecond, Window: 24 * time.Hour, Measurements: 3},
			"traceable: max deviation 12.0 ms against samay1.nic.in over 24 h"},
		{api.TimeTrace{Reference: "samay1.nic.in", MaxDeviation: 300 * time.Millisecond, Bound: 100 * time.Millisecond, Window: 24 * time.Hour, Measurements: 3, Alarm: "deviation", AlarmSince: time.Now()},
			"max deviation 300.0 ms against samay1.nic.in over 24 h, bound 100.0 ms"},
		{api.TimeTrace{Alarm: "no-reference", AlarmSince: time.Now()}, "NOT traceable (alarm since "},
		{api.TimeTrace{Window: 24 * time.Hour}, "NOT traceable yet"},
	} {
		if got := traceLine(&tt.tr); !strings.Contains(got, tt.want) {
			t.Errorf("traceLine(%+v) = %q, want %q", tt.tr, got, tt.want)
		}
	}
}

func TestSplitList(t *testing.T) {
	if got := splitList(""); got != nil {
		t.Errorf("splitList(\"\") = %q", got)
	}
	if got := splitList("placement,,market"); !slices.Equal(got, []string{"placement", "", "market"}) {
		t.Errorf("empty items dropped: %q", got)
	}
}
