package jurisdiction

import (
	"strings"
	"testing"
	"time"
)

// Found by scripts/mutation.sh: the ends of Validate's ranges (retention in
// years and days, clock offset, reporting deadline) could move by one
// unnoticed. Each end is accepted; one past it is refused with the field's
// name.
func TestValidateRangeEnds(t *testing.T) {
	base := func() Profile {
		p := Builtin()[CERTIn2022Profile]
		sub, ses, ict, clk, inc := *p.SubscriberRecords, *p.SessionRecords, *p.ICTLogs, *p.ClockSync, *p.IncidentReporting
		p.SubscriberRecords, p.SessionRecords, p.ICTLogs, p.ClockSync, p.IncidentReporting = &sub, &ses, &ict, &clk, &inc
		return p
	}
	for _, tc := range []struct {
		field  string
		set    func(*Profile, int) // sets the field to n
		lo, hi int
	}{
		{"subscriber_records.retention_years", func(p *Profile, n int) { p.SubscriberRecords.RetentionYears = n }, 1, maxRetentionYears},
		{"session_records.retention_years", func(p *Profile, n int) { p.SessionRecords.RetentionYears = n }, 1, maxRetentionYears},
		{"ict_logs.retention_days", func(p *Profile, n int) { p.ICTLogs.RetentionDays = n }, 1, maxRetentionDays},
		{"clock_sync.max_offset", func(p *Profile, n int) { p.ClockSync.MaxOffset = time.Duration(n) }, int(minMaxOffset), int(maxMaxOffset)},
		{"incident_reporting.deadline", func(p *Profile, n int) { p.IncidentReporting.Deadline = time.Duration(n) }, int(minDeadline), int(maxDeadline)},
	} {
		for _, c := range []struct {
			n  int
			ok bool
		}{{tc.lo, true}, {tc.hi, true}, {tc.lo - 1, false}, {tc.hi + 1, false}} {
			p := base()
			tc.set(&p, c.n)
			err := p.Validate()
			if c.ok && err != nil {
				t.Errorf("%s = %d refused: %v", tc.field, c.n, err)
			}
			if !c.ok && (err == nil || !strings.Contains(err.Error(), tc.field)) {
				t.Errorf("%s = %d: error %v, want one naming the field", tc.field, c.n, err)
			}
		}
	}
}

// Found by scripts/mutation.sh: the length limits and character ranges of
// profile names and clock-source host names were untested at their ends.
func TestNameAndHostEnds(t *testing.T) {
	for s, want := range map[string]bool{
		"a": true, "z": true, "a-0": true, "z9": true, strings.Repeat("a", 63): true,
		"": false, strings.Repeat("a", 64): false, "`a": false, "{a": false, "0a": false,
		"a-": false, "a`": false, "a{": false, "a/": false, "a:": false, "aA": false,
	} {
		if got := validName(s); got != want {
			t.Errorf("validName(%q) = %v, want %v", s, got, want)
		}
	}
	label63 := strings.Repeat("a", 63)
	for s, want := range map[string]bool{
		"a.z": true, "A.Z": true, "0.9a": true, "a-b.org": true, label63 + ".org": true,
		strings.Repeat(label63+".", 3) + strings.Repeat("b", 61): true, // 253 characters
		"": false, strings.Repeat(label63+".", 3) + strings.Repeat("b", 62): false,
		label63 + "a.org": false, "a..org": false, "-a.org": false, "a-.org": false,
		"a`.org": false, "a{.org": false, "a@.org": false, "a[.org": false, "a/.org": false, "a:.org": false,
		"1.2.3": false, "fe80::1%eth0": false, "192.0.2.1": true,
	} {
		if got := validHost(s); got != want {
			t.Errorf("validHost(%.20q… len %d) = %v, want %v", s, len(s), got, want)
		}
	}
}
