package jurisdiction

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Names of the built-in profiles.
const (
	NoneProfile       = "none"
	CERTIn2022Profile = "cert-in-2022"
)

// DefaultMaxOffset is the clock offset from the sync sources above which a
// node's clock is flagged, when a profile does not set one. The CERT-In
// directions name sources, not a bound; this one is Meridian's.
const DefaultMaxOffset = 100 * time.Millisecond

// Profile is a named set of duty building blocks. A nil block means the duty
// is absent. Its JSON form uses the field names in the tags, with durations
// as strings such as "6h"; ParseProfileJSON reads it strictly.
type Profile struct {
	Name  string `json:"name"`  // lower-case letters, digits, hyphens: "cert-in-2022"
	Title string `json:"title"` // for people: "India, CERT-In Directions of 28 April 2022"

	SubscriberRecords *SubscriberRecordsDuty `json:"subscriber_records,omitempty"`
	SessionRecords    *SessionRecordsDuty    `json:"session_records,omitempty"`
	ICTLogs           *ICTLogsDuty           `json:"ict_logs,omitempty"`
	ClockSync         *ClockSyncDuty         `json:"clock_sync,omitempty"`
	IncidentReporting *IncidentReportingDuty `json:"incident_reporting,omitempty"`
	PointOfContact    *PointOfContactDuty    `json:"point_of_contact,omitempty"`
}

// SubscriberRecordsDuty is the duty to keep validated subscriber records
// (for cert-in-2022, fields a–g of direction (v)).
type SubscriberRecordsDuty struct {
	RetentionYears int    `json:"retention_years"` // after the registration is cancelled
	ConsumerOnly   bool   `json:"consumer_only"`   // an organisation's own staff VPN is exempt
	Cite           string `json:"cite"`            // the provision: "direction (v)"
}

// SessionRecordsDuty is the duty to keep attribution records: tunnel
// addresses, exit address and port block, connecting address, and times, so
// that an exit address, port and time lead to one subscriber.
type SessionRecordsDuty struct {
	RetentionYears int    `json:"retention_years"` // after cancellation, with the subscriber record
	ConsumerOnly   bool   `json:"consumer_only"`
	Cite           string `json:"cite"`
}

// ICTLogsDuty is the duty to keep the logs of all ICT systems for a rolling
// period.
type ICTLogsDuty struct {
	RetentionDays int    `json:"retention_days"`
	Cite          string `json:"cite"`
}

// ClockSyncDuty is the duty to synchronise clocks with the given NTP sources.
type ClockSyncDuty struct {
	Sources   []string      // host names or IP addresses
	MaxOffset time.Duration // offsets above it are flagged
	Cite      string
}

// IncidentReportingDuty is the duty to report incidents within a deadline.
type IncidentReportingDuty struct {
	Deadline  time.Duration // from noticing or being told of the incident
	Recipient string        // email address
	Cite      string
}

// PointOfContactDuty is the duty to designate a point of contact and send its
// details to a recipient.
type PointOfContactDuty struct {
	Recipient string `json:"recipient"` // email address
	Cite      string `json:"cite"`
}

// Builtin returns the built-in profiles, keyed by name: none, which has no
// duties, and cert-in-2022. Each call returns fresh values.
func Builtin() map[string]Profile {
	return map[string]Profile{
		NoneProfile: {Name: NoneProfile, Title: "No duties"},
		CERTIn2022Profile: {
			Name:              CERTIn2022Profile,
			Title:             "India, CERT-In Directions of 28 April 2022",
			SubscriberRecords: &SubscriberRecordsDuty{RetentionYears: 5, ConsumerOnly: true, Cite: "direction (v)"},
			SessionRecords:    &SessionRecordsDuty{RetentionYears: 5, ConsumerOnly: true, Cite: "direction (v)(c)"},
			ICTLogs:           &ICTLogsDuty{RetentionDays: 180, Cite: "direction (iv)"},
			ClockSync: &ClockSyncDuty{
				Sources:   []string{"samay1.nic.in", "samay2.nic.in", "time.nplindia.org"},
				MaxOffset: DefaultMaxOffset,
				Cite:      "direction (i)",
			},
			IncidentReporting: &IncidentReportingDuty{Deadline: 6 * time.Hour, Recipient: "incident@cert-in.org.in", Cite: "direction (ii)"},
			PointOfContact:    &PointOfContactDuty{Recipient: "info@cert-in.org.in", Cite: "direction (iii)"},
		},
	}
}

// Bounds that Validate enforces.
const (
	maxRetentionYears = 100
	maxRetentionDays  = 100 * 366
	minMaxOffset      = time.Millisecond
	maxMaxOffset      = time.Minute
	minDeadline       = time.Minute
	maxDeadline       = 30 * 24 * time.Hour
	maxSources        = 10
	maxTitle          = 200
	maxCite           = 100
)

// Validate reports every problem with p, naming fields as in its JSON form.
func (p Profile) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("profile %q: %s", p.Name, fmt.Sprintf(format, args...)))
	}
	text := func(field, s string, max int) {
		switch {
		case s == "":
			bad("%s is empty", field)
		case len(s) > max:
			bad("%s is %d bytes long: want at most %d", field, len(s), max)
		case !printable(s):
			bad("%s %q has unprintable characters", field, s)
		}
	}
	cite := func(block, s string) {
		text(block+".cite", s, maxCite)
	}
	years := func(field string, n int) {
		if n < 1 || n > maxRetentionYears {
			bad("%s is %d: want 1 to %d years", field, n, maxRetentionYears)
		}
	}
	email := func(field, s string) {
		if a, err := mail.ParseAddress(s); err != nil || a.Name != "" || a.Address != s {
			bad("%s %q is not an email address such as incident@example.org", field, s)
		}
	}
	between := func(field string, d, min, max time.Duration) {
		if d < min || d > max {
			bad("%s is %s: want %s to %s", field, shortDuration(d), human(min), human(max))
		}
	}

	if !validName(p.Name) {
		bad("name must be 1 to 63 lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen")
	}
	text("title", p.Title, maxTitle)
	if d := p.SubscriberRecords; d != nil {
		years("subscriber_records.retention_years", d.RetentionYears)
		cite("subscriber_records", d.Cite)
	}
	if d := p.SessionRecords; d != nil {
		years("session_records.retention_years", d.RetentionYears)
		cite("session_records", d.Cite)
	}
	if d := p.ICTLogs; d != nil {
		if d.RetentionDays < 1 || d.RetentionDays > maxRetentionDays {
			bad("ict_logs.retention_days is %d: want 1 to %d days", d.RetentionDays, maxRetentionDays)
		}
		cite("ict_logs", d.Cite)
	}
	if d := p.ClockSync; d != nil {
		switch n := len(d.Sources); {
		case n == 0:
			bad("clock_sync.sources is empty: name at least one NTP server, such as samay1.nic.in")
		case n > maxSources:
			bad("clock_sync.sources has %d entries: want at most %d", n, maxSources)
		}
		for i, s := range d.Sources {
			if !validHost(s) {
				bad("clock_sync.sources[%d] %q is not a host name or IP address", i, s)
			}
			for _, t := range d.Sources[:i] {
				if strings.EqualFold(s, t) {
					bad("clock_sync.sources lists %q twice", s)
				}
			}
		}
		between("clock_sync.max_offset", d.MaxOffset, minMaxOffset, maxMaxOffset)
		cite("clock_sync", d.Cite)
	}
	if d := p.IncidentReporting; d != nil {
		between("incident_reporting.deadline", d.Deadline, minDeadline, maxDeadline)
		email("incident_reporting.recipient", d.Recipient)
		cite("incident_reporting", d.Cite)
	}
	if d := p.PointOfContact; d != nil {
		email("point_of_contact.recipient", d.Recipient)
		cite("point_of_contact", d.Cite)
	}
	return errors.Join(errs...)
}

// ParseProfileJSON reads an operator-defined profile. Unknown fields and
// trailing data are refused, the profile is validated, and the names of
// built-in profiles may not be redefined. A clock_sync block without
// max_offset gets DefaultMaxOffset.
//
// Example:
//
//	{
//	  "name": "example-law",
//	  "title": "Example Law of 2030",
//	  "session_records": {"retention_years": 1, "consumer_only": true, "cite": "article 4"},
//	  "ict_logs": {"retention_days": 90, "cite": "article 5"},
//	  "clock_sync": {"sources": ["time.example.org"], "max_offset": "250ms", "cite": "article 6"},
//	  "incident_reporting": {"deadline": "24h", "recipient": "cert@example.org", "cite": "article 7"}
//	}
func ParseProfileJSON(b []byte) (Profile, error) {
	var p Profile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Profile{}, fmt.Errorf("duty profile: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Profile{}, errors.New("duty profile: unexpected data after the profile object")
	}
	if _, ok := Builtin()[p.Name]; ok {
		return Profile{}, fmt.Errorf("duty profile: %q is a built-in profile and cannot be redefined; choose another name", p.Name)
	}
	if err := p.Validate(); err != nil {
		return Profile{}, err
	}
	return p, nil
}

type clockSyncJSON struct {
	Sources   []string `json:"sources"`
	MaxOffset string   `json:"max_offset,omitempty"`
	Cite      string   `json:"cite"`
}

func (d ClockSyncDuty) MarshalJSON() ([]byte, error) {
	return json.Marshal(clockSyncJSON{d.Sources, shortDuration(d.MaxOffset), d.Cite})
}

func (d *ClockSyncDuty) UnmarshalJSON(b []byte) error {
	var j clockSyncJSON
	if err := strictUnmarshal(b, &j); err != nil {
		return fmt.Errorf("clock_sync: %w", err)
	}
	off := DefaultMaxOffset
	if j.MaxOffset != "" {
		var err error
		if off, err = time.ParseDuration(j.MaxOffset); err != nil {
			return fmt.Errorf("clock_sync.max_offset: %w (want a duration such as \"100ms\")", err)
		}
	}
	*d = ClockSyncDuty{Sources: j.Sources, MaxOffset: off, Cite: j.Cite}
	return nil
}

type incidentReportingJSON struct {
	Deadline  string `json:"deadline"`
	Recipient string `json:"recipient"`
	Cite      string `json:"cite"`
}

func (d IncidentReportingDuty) MarshalJSON() ([]byte, error) {
	return json.Marshal(incidentReportingJSON{shortDuration(d.Deadline), d.Recipient, d.Cite})
}

func (d *IncidentReportingDuty) UnmarshalJSON(b []byte) error {
	var j incidentReportingJSON
	if err := strictUnmarshal(b, &j); err != nil {
		return fmt.Errorf("incident_reporting: %w", err)
	}
	var deadline time.Duration // missing: Validate says so
	if j.Deadline != "" {
		var err error
		if deadline, err = time.ParseDuration(j.Deadline); err != nil {
			return fmt.Errorf("incident_reporting.deadline: %w (want a duration such as \"6h\")", err)
		}
	}
	*d = IncidentReportingDuty{Deadline: deadline, Recipient: j.Recipient, Cite: j.Cite}
	return nil
}

// strictUnmarshal is json.Unmarshal refusing unknown fields, which a
// decoder's DisallowUnknownFields does not pass on to UnmarshalJSON methods.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// validHost reports whether s is an IP address without zone or a DNS host
// name: dot-separated labels of letters, digits and inner hyphens, the last
// one not all digits.
func validHost(s string) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// shortDuration is d.String() without zero minutes and seconds: "6h",
// "1h30m", "100ms"; time.ParseDuration reads it back.
func shortDuration(d time.Duration) string {
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}
