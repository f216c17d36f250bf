package incident

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/timesync/syncstamp"
)

// Report is an incident report as CERT-In's reporting form lays it out:
// the JSON carries the form's fields under their names, Text renders the
// form in its order. A partial report lists what is not yet known.
type Report struct {
	Incident       int64     `json:"incident"`
	Report         string    `json:"report"`  // "initial report", "update 1" ...
	Version        int       `json:"version"` // the content version reported
	Generated      time.Time `json:"generated_at"`
	Deadline       time.Time `json:"deadline"`
	Status         string    `json:"status"`
	TypeOfIncident TypeInfo  `json:"type_of_incident"`
	Detected       time.Time `json:"detected_at"` // when the incident was noticed
	// The control node's clock sync state when the noticed time was taken
	// and, for an incident confirmed from a candidate, when it was
	// confirmed (Incident.NoticeClock, ConfirmClock): context for the
	// times, outside the form's items.
	ClockAtNotice       *syncstamp.Stamp `json:"clock_at_notice,omitempty"`
	ClockAtConfirmation *syncstamp.Stamp `json:"clock_at_confirmation,omitempty"`
	Fields
	NotYetKnown []string `json:"not_yet_known,omitempty"` // the form's items not given yet
}

// TypeInfo is an Annexure I type with its wording.
type TypeInfo struct {
	Number Type   `json:"number"`
	Name   string `json:"name"`
}

// NewReport renders the report that i's next delivery would carry: i must
// come with its updates and deliveries.
func NewReport(i Incident, now time.Time) Report {
	i = i.AsOf(now)
	r := Report{
		Incident: i.ID, Report: ReportLabel(len(i.Deliveries)), Version: i.Version, Generated: now.UTC(),
		Deadline: i.Deadline.UTC(), Status: i.Status, TypeOfIncident: TypeInfo{i.Type, i.Type.Name()}, Detected: i.Noticed.UTC(),
		ClockAtNotice: i.NoticeClock, ClockAtConfirmation: i.ConfirmClock,
	}
	if i.Fields != nil {
		r.Fields = *i.Fields
	}
	v := reflect.ValueOf(r.Fields)
	for n := range v.NumField() {
		if v.Field(n).IsZero() {
			name, _, _ := strings.Cut(v.Type().Field(n).Tag.Get("json"), ",")
			r.NotYetKnown = append(r.NotYetKnown, name)
		}
	}
	return r
}

// item is one item of the reporting form: its label as the form words it,
// and its value as lines of text (none when not yet known).
type item struct {
	label string
	lines func(r *Report) []string
}

var form = []item{
	{"Contact details of the reporter", func(r *Report) []string {
		c := r.Reporter
		return labelled("Name", c.Name, "Organisation", c.Organisation, "Title", c.Title, "Phone/Fax No.", c.PhoneFax,
			"Mobile", c.Mobile, "Email", c.Email, "Address", c.Address)
	}},
	{"Sector", one(func(r *Report) string { return r.Sector })},
	{"Physical location of the affected computer/network and name of ISP", func(r *Report) []string {
		if r.PhysicalLocation == "" && r.ISP == "" {
			return nil
		}
		return labelled("Location", orUnknown(r.PhysicalLocation), "ISP", orUnknown(r.ISP))
	}},
	{"Date and time the incident occurred", one(func(r *Report) string { return formatRFC3339(r.Occurred) })},
	{"Is the affected system/network critical to the organisation's mission?", one(func(r *Report) string {
		switch {
		case r.CriticalToMission == nil:
			return ""
		case *r.CriticalToMission:
			return "Yes"
		}
		return "No"
	})},
	{"Information on the affected system(s)", func(r *Report) []string {
		var out []string
		for n, a := range r.AffectedSystems {
			ls := labelled("IP address", a.IPAddress, "Computer/host name", a.HostName, "Operating system (incl. version/release)", a.OperatingSystem,
				"Last patched/updated", a.LastPatched, "Hardware vendor/model", a.HardwareVendorModel)
			for k, l := range ls {
				p := "   "
				if k == 0 {
					p = fmt.Sprintf("%c) ", 'a'+n%26)
				}
				out = append(out, p+l)
			}
		}
		return out
	}},
	{"Type of incident (Annexure I)", one(func(r *Report) string { return r.TypeOfIncident.Number.String() })},
	{"Description of the incident", one(func(r *Report) string { return r.Description })},
	{"Unusual behaviour/symptoms", one(func(r *Report) string { return r.UnusualBehaviour })},
	{"Has this problem been experienced earlier?", one(func(r *Report) string { return r.ExperiencedEarlier })},
	{"When and how was the incident detected?", func(r *Report) []string {
		return labelled("Detected (noticed) at", formatTime(r.Detected), "How", orUnknown(r.HowDetected))
	}},
	{"Agencies notified", func(r *Report) []string { return r.AgenciesNotified }},
	{"Additional information (logs being submitted, and how)", one(func(r *Report) string { return r.AdditionalInformation })},
	{"IP address of the apparent or suspected source", func(r *Report) []string {
		if len(r.SuspectedSources) == 0 && r.SourceInformation == "" {
			return nil
		}
		return labelled("Source IP address(es)", orUnknown(strings.Join(r.SuspectedSources, ", ")), "Other information available", r.SourceInformation)
	}},
	{"Security infrastructure in place", func(r *Report) []string { return r.SecurityInfrastructure }},
	{"How many host(s) are affected?", one(func(r *Report) string {
		switch r.HostsAffected {
		case Hosts1To10:
			return "1 to 10"
		case Hosts10To100:
			return "10 to 100"
		case HostsMoreThan100:
			return "More than 100"
		}
		return ""
	})},
	{"Actions taken to mitigate the intrusion/attack", one(func(r *Report) string { return r.Mitigation })},
}

func one(f func(r *Report) string) func(r *Report) []string {
	return func(r *Report) []string {
		if v := f(r); v != "" {
			return strings.Split(v, "\n")
		}
		return nil
	}
}

// labelled returns "label: value" lines for the pairs whose value is
// given; values of several lines are indented under their label.
func labelled(pairs ...string) []string {
	var out []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if v := pairs[i+1]; v != "" {
			out = append(out, pairs[i]+": "+strings.ReplaceAll(v, "\n", "\n      "))
		}
	}
	return out
}

func orUnknown(s string) string {
	if s == "" {
		return "not yet known"
	}
	return s
}

const timeLayout = "2006-01-02 15:04:05 UTC"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// formatRFC3339 shows a checked RFC 3339 time in UTC, with the reporter's
// own reading beside it when that was in another zone.
func formatRFC3339(s string) string {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	if _, off := t.Zone(); off != 0 {
		return formatTime(t) + " (" + s + ")"
	}
	return formatTime(t)
}

// Text renders the report as plain text, the form's items in order.
func (r Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Cyber security incident report to CERT-In: %s\n", r.Report)
	fmt.Fprintf(&b, "Meridian incident %d, content version %d, generated %s\n", r.Incident, r.Version, formatTime(r.Generated))
	fmt.Fprintf(&b, "Time noticed: %s. Initial report due by %s (%s).\n", formatTime(r.Detected), formatTime(r.Deadline), r.Status)
	b.WriteString(ClockLines(r.ClockAtNotice, r.ClockAtConfirmation))
	b.WriteString("\n")
	for n, it := range form {
		lines := it.lines(&r)
		switch {
		case len(lines) == 0:
			fmt.Fprintf(&b, "%d. %s: not yet known\n", n+1, it.label)
		case len(lines) == 1:
			fmt.Fprintf(&b, "%d. %s: %s\n", n+1, it.label, lines[0])
		default:
			fmt.Fprintf(&b, "%d. %s:\n", n+1, it.label)
			for _, l := range lines {
				fmt.Fprintf(&b, "   %s\n", l)
			}
		}
	}
	if len(r.NotYetKnown) > 0 {
		fmt.Fprintf(&b, "\nThis is a partial report; to follow in an update: %s.\n", strings.Join(r.NotYetKnown, ", "))
	}
	return b.String()
}

// ClockLines words the control node's clock sync state at notice and at
// confirmation, one line each ("Clock at notice: synced, offset +2.1 ms
// from samay1.nic.in"); a stamp not kept gives no line.
func ClockLines(notice, confirm *syncstamp.Stamp) string {
	var b strings.Builder
	for _, c := range []struct {
		label string
		s     *syncstamp.Stamp
	}{{"Clock at notice", notice}, {"Clock at confirmation", confirm}} {
		if c.s != nil {
			fmt.Fprintf(&b, "%s: %s (control node, %s).\n", c.label, c.s, formatTime(c.s.At))
		}
	}
	return b.String()
}

// Subject is the email subject of the report.
func (r Report) Subject() string {
	from := "Meridian"
	if o := r.Reporter.Organisation; o != "" {
		from = o
	}
	return fmt.Sprintf("Cyber security incident report (%s): Annexure I type %s [%s, incident %d]", r.Report, r.TypeOfIncident.Number, from, r.Incident)
}
