package jurisdiction

import (
	"strings"
	"testing"
	"time"
)

func TestUnconfirmedSignups(t *testing.T) {
	d := Duty{Kind: SubscriberRecords, Why: "IN / cert-in-2022 / direction (v)", RetentionYears: 5}
	got := UnconfirmedSignups(d, 7*24*time.Hour)
	for _, want := range []string{"within 7 days are withdrawn and purged", "IN / cert-in-2022 / direction (v)", "5 years", "hired nothing"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if got := UnconfirmedSignups(d, 0); !strings.Contains(got, "kept like any registration") || !strings.Contains(got, "5 years") {
		t.Errorf("expiry off: %q", got)
	}
}
