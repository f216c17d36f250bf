// Package incident keeps the register that CERT-In's directions (ii) and
// (iii) of 28 April 2022 ask for: cyber security incidents of the types of
// Annexure I, reported within a deadline (6 hours) of being noticed, with
// partial first reports completed by updates; the point of contact; and
// CERT-In's orders with their due times.
//
// The package is the domain: types and wording, the reporting form's
// fields and their checks, the state machine, deadlines and the alerts they
// raise, and the rendering of reports and of the point-of-contact letter.
// Storage, delivery and the HTTP API are elsewhere (store, mail, control).
package incident

import (
	"errors"
	"fmt"
	"net/mail"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/timesync/syncstamp"

	"github.com/meridian-vpn/meridian/internal/check"
)

// State is where an incident stands with CERT-In.
//
//	noticed ──send──▶ reported ──send──▶ updated ──send──▶ updated
//	   │                 │                  │
//	   └──────close──────┴──────close───────┴──▶ closed
//
// The content may be amended in every state but closed; amending does not
// change the state (Incident.Unsent says that changes wait to be sent).
type State string

const (
	Noticed  State = "noticed"  // recorded; the initial report has not been sent: the clock runs
	Reported State = "reported" // the initial report (possibly partial) reached CERT-In
	Updated  State = "updated"  // at least one update followed the initial report
	Closed   State = "closed"   // no further reports; a reason is recorded
)

// Event is something that happens to an incident.
type Event string

const (
	Amend Event = "amend" // content added or corrected
	Send  Event = "send"  // a report was delivered (by email, phone or fax)
	Close Event = "close" // the incident is closed
)

// After returns the state that follows event e in state s, or an error
// that says why e is not allowed.
func (s State) After(e Event) (State, error) {
	switch s {
	case Noticed, Reported, Updated:
	case Closed:
		return s, errors.New("the incident is closed: it takes no further updates or reports")
	default:
		return s, fmt.Errorf("unknown incident state %q", s)
	}
	switch e {
	case Amend:
		return s, nil
	case Send:
		if s == Noticed {
			return Reported, nil
		}
		return Updated, nil
	case Close:
		return Closed, nil
	}
	return s, fmt.Errorf("unknown incident event %q", e)
}

// Contact is the reporter's contact details, as the form asks for them.
type Contact struct {
	Name         string `json:"name,omitempty"`
	Organisation string `json:"organisation,omitempty"`
	Title        string `json:"title,omitempty"`
	PhoneFax     string `json:"phone_fax,omitempty"` // "Phone/Fax No."
	Mobile       string `json:"mobile,omitempty"`
	Email        string `json:"email,omitempty"`
	Address      string `json:"address,omitempty"`
}

// AffectedSystem is one entry of the form's "affected system" item.
type AffectedSystem struct {
	IPAddress           string `json:"ip_address,omitempty"`
	HostName            string `json:"host_name,omitempty"`
	OperatingSystem     string `json:"operating_system,omitempty"` // including version/release
	LastPatched         string `json:"last_patched,omitempty"`     // last patched/updated
	HardwareVendorModel string `json:"hardware_vendor_model,omitempty"`
}

// HostsAffected is the form's choice of how many hosts are affected.
type HostsAffected string

const (
	Hosts1To10       HostsAffected = "1-10"
	Hosts10To100     HostsAffected = "10-100"
	HostsMoreThan100 HostsAffected = "more-than-100"
)

// Fields are the items of CERT-In's incident reporting form, named as the
// form names them, except the type of incident and the time it was
// detected (noticed), which the Incident holds. Any may be left empty in a
// partial first report and given by a later update. In an update, a field
// that is given replaces the previous value; an empty one leaves it as it
// was (write "none" or "not applicable" to withdraw a value).
type Fields struct {
	Reporter               Contact          `json:"reporter,omitzero"`
	Sector                 string           `json:"sector,omitempty"`
	PhysicalLocation       string           `json:"physical_location,omitempty"` // of the affected computer/network
	ISP                    string           `json:"isp,omitempty"`               // name of the ISP
	Occurred               string           `json:"occurred,omitempty"`          // date and time the incident occurred, RFC 3339 with zone
	CriticalToMission      *bool            `json:"critical_to_mission,omitempty"`
	AffectedSystems        []AffectedSystem `json:"affected_systems,omitempty"`
	Description            string           `json:"description,omitempty"`
	UnusualBehaviour       string           `json:"unusual_behaviour,omitempty"`   // unusual behaviour/symptoms
	ExperiencedEarlier     string           `json:"experienced_earlier,omitempty"` // has this happened before, and when
	HowDetected            string           `json:"how_detected,omitempty"`
	AgenciesNotified       []string         `json:"agencies_notified,omitempty"`
	AdditionalInformation  string           `json:"additional_information,omitempty"` // logs being submitted, and how
	SuspectedSources       []string         `json:"suspected_sources,omitempty"`      // IP addresses (or prefixes) of the apparent or suspected source
	SourceInformation      string           `json:"source_information,omitempty"`     // other information available on the source
	SecurityInfrastructure []string         `json:"security_infrastructure,omitempty"`
	HostsAffected          HostsAffected    `json:"hosts_affected,omitempty"`
	Mitigation             string           `json:"mitigation,omitempty"` // actions taken to mitigate
}

// Merge returns base with every field that patch gives replaced.
func Merge(base, patch Fields) Fields {
	merge(reflect.ValueOf(&base).Elem(), reflect.ValueOf(patch))
	return base
}

func merge(dst, src reflect.Value) {
	for i := range dst.NumField() {
		d, s := dst.Field(i), src.Field(i)
		switch {
		case s.IsZero(), s.Kind() == reflect.Slice && s.Len() == 0:
		case d.Kind() == reflect.Struct:
			merge(d, s)
		default:
			d.Set(s)
		}
	}
}

// Limits on what one field may hold.
const (
	MaxShort = 200  // names, numbers, host names, one-line items
	MaxLong  = 4000 // descriptions and other prose
	MaxItems = 50   // entries of a list
)

var phoneRE = regexp.MustCompile(`^\+?[0-9][0-9 ()-]{5,23}$`)

// FieldError says which field is wrong and how; it never repeats the
// value, which may be personal data.
type FieldError struct {
	Field string // the JSON name: "reporter.email", "affected_systems[2].ip_address"
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// CheckText trims *s and checks its length and characters: one line for
// short fields (max up to MaxShort), lines and tabs allowed in longer ones.
func CheckText(field string, s *string, max int) error {
	*s = strings.TrimSpace(*s)
	if n := len([]rune(*s)); n > max {
		return fieldErr(field, "at most %d characters (got %d)", max, n)
	}
	multiline := max > MaxShort
	if strings.ContainsFunc(*s, func(r rune) bool {
		return r == 0x7f || r < ' ' && !(multiline && (r == '\n' || r == '\t'))
	}) {
		if multiline {
			return fieldErr(field, "control characters other than newlines and tabs are not allowed")
		}
		return fieldErr(field, "must be one line of printable characters")
	}
	if err := check.Text(*s, multiline); err != nil {
		return fieldErr(field, "%v", err)
	}
	return nil
}

func checkEmail(field, s string) error {
	if s == "" {
		return nil
	}
	if a, err := mail.ParseAddress(s); err != nil || a.Address != s {
		return fieldErr(field, "not an email address (give the bare address, e.g. soc@example.com)")
	}
	return nil
}

func checkPhone(field, s string) error {
	if s != "" && !phoneRE.MatchString(s) {
		return fieldErr(field, "not a phone number (digits, spaces, ()-, optional leading +)")
	}
	return nil
}

// Check trims and validates f. It accepts a partial report: no field is
// required.
func (f *Fields) Check() error {
	c := &f.Reporter
	for _, t := range []struct {
		field string
		v     *string
		max   int
	}{
		{"reporter.name", &c.Name, MaxShort}, {"reporter.organisation", &c.Organisation, MaxShort},
		{"reporter.title", &c.Title, MaxShort}, {"reporter.phone_fax", &c.PhoneFax, MaxShort},
		{"reporter.mobile", &c.Mobile, MaxShort}, {"reporter.email", &c.Email, MaxShort},
		{"reporter.address", &c.Address, MaxLong},
		{"sector", &f.Sector, MaxShort}, {"physical_location", &f.PhysicalLocation, MaxLong},
		{"isp", &f.ISP, MaxShort}, {"occurred", &f.Occurred, MaxShort},
		{"description", &f.Description, MaxLong}, {"unusual_behaviour", &f.UnusualBehaviour, MaxLong},
		{"experienced_earlier", &f.ExperiencedEarlier, MaxLong}, {"how_detected", &f.HowDetected, MaxLong},
		{"additional_information", &f.AdditionalInformation, MaxLong},
		{"source_information", &f.SourceInformation, MaxLong}, {"mitigation", &f.Mitigation, MaxLong},
	} {
		if err := CheckText(t.field, t.v, t.max); err != nil {
			return err
		}
	}
	if err := errors.Join(checkEmail("reporter.email", c.Email), checkPhone("reporter.phone_fax", c.PhoneFax), checkPhone("reporter.mobile", c.Mobile)); err != nil {
		return err
	}
	if f.Occurred != "" {
		t, err := ParseTime("occurred", f.Occurred)
		if err != nil {
			return err
		}
		f.Occurred = t.Format(time.RFC3339)
	}
	for _, l := range []struct {
		field string
		v     []string
	}{{"agencies_notified", f.AgenciesNotified}, {"security_infrastructure", f.SecurityInfrastructure}, {"suspected_sources", f.SuspectedSources}} {
		if len(l.v) > MaxItems {
			return fieldErr(l.field, "at most %d entries (got %d)", MaxItems, len(l.v))
		}
		for i := range l.v {
			if err := CheckText(fmt.Sprintf("%s[%d]", l.field, i), &l.v[i], MaxShort); err != nil {
				return err
			}
		}
	}
	for i, s := range f.SuspectedSources {
		if _, err := netip.ParseAddr(s); err != nil {
			if _, err := netip.ParsePrefix(s); err != nil {
				return fieldErr(fmt.Sprintf("suspected_sources[%d]", i), "not an IP address or prefix (put host names and other details in source_information)")
			}
		}
	}
	if len(f.AffectedSystems) > MaxItems {
		return fieldErr("affected_systems", "at most %d entries (got %d)", MaxItems, len(f.AffectedSystems))
	}
	for i := range f.AffectedSystems {
		a := &f.AffectedSystems[i]
		at := fmt.Sprintf("affected_systems[%d].", i)
		for _, t := range []struct {
			field string
			v     *string
		}{{"ip_address", &a.IPAddress}, {"host_name", &a.HostName}, {"operating_system", &a.OperatingSystem}, {"last_patched", &a.LastPatched}, {"hardware_vendor_model", &a.HardwareVendorModel}} {
			if err := CheckText(at+t.field, t.v, MaxShort); err != nil {
				return err
			}
		}
		if a.IPAddress != "" {
			if _, err := netip.ParseAddr(a.IPAddress); err != nil {
				return fieldErr(at+"ip_address", "not an IP address")
			}
		}
		if *a == (AffectedSystem{}) {
			return fieldErr(at[:len(at)-1], "empty: give at least the IP address or host name")
		}
	}
	switch f.HostsAffected {
	case "", Hosts1To10, Hosts10To100, HostsMoreThan100:
	default:
		return fieldErr("hosts_affected", "must be %s, %s or %s", Hosts1To10, Hosts10To100, HostsMoreThan100)
	}
	return nil
}

// ParseTime reads an RFC 3339 time that names its zone (Z or an offset),
// so that the deadline counted from it is not off by hours.
func ParseTime(field, s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, fieldErr(field, "required (RFC 3339 with a zone, e.g. 2026-05-01T14:30:00+05:30)")
	}
	t, err := time.Parse(time.RFC3339, s)
	if err == nil {
		if err := check.Time(t); err != nil {
			return time.Time{}, fieldErr(field, "%v", err)
		}
		return t, nil
	}
	if _, err := time.Parse("2006-01-02T15:04:05", s); err == nil {
		return time.Time{}, fieldErr(field, "%q has no time zone: add Z or an offset, e.g. %s+05:30", s, s)
	}
	if _, err := time.Parse("2006-01-02T15:04", s); err == nil {
		return time.Time{}, fieldErr(field, "%q has no seconds and no time zone: write e.g. %s:00+05:30", s, s)
	}
	return time.Time{}, fieldErr(field, "%q is not an RFC 3339 time with a zone, e.g. 2026-05-01T14:30:00+05:30", s)
}

// Incident is one entry of the register.
type Incident struct {
	ID    int64 `json:"id"`
	Type  Type  `json:"type"`
	State State `json:"state"`
	// Noticed is when the operator noticed the incident or was told of it:
	// the deadline counts from here. It cannot change once recorded.
	Noticed     time.Time `json:"noticed_at"`
	Deadline    time.Time `json:"deadline"`
	DeadlineWhy string    `json:"deadline_why"`         // the duty that set it, or why the default applies
	Recipient   string    `json:"recipient"`            // where reports go unless the sender says otherwise
	Reported    time.Time `json:"reported_at,omitzero"` // the initial report's delivery
	Closed      time.Time `json:"closed_at,omitzero"`
	Version     int       `json:"version"` // the newest version of the content (1 at creation)
	// NoticeClock is the control node's clock sync state (CERT-In
	// direction (i)) when the noticed time was taken: when the incident
	// was added (the operator may give an earlier noticed time), or, for
	// one confirmed from a candidate, when the candidate was detected.
	// Nil for incidents recorded before it was kept.
	NoticeClock *syncstamp.Stamp `json:"clock_at_notice,omitempty"`
	// ConfirmClock is, for an incident confirmed from a candidate, the
	// control node's sync state when it was confirmed.
	ConfirmClock *syncstamp.Stamp `json:"clock_at_confirmation,omitempty"`

	Alerts     []FiredAlert `json:"alerts,omitempty"`
	Updates    []Update     `json:"updates,omitempty"`    // the history, oldest first
	Deliveries []Delivery   `json:"deliveries,omitempty"` // reports delivered, oldest first

	// Set by AsOf, for people and scripts reading the register.
	TypeName    string  `json:"type_name,omitempty"`
	Status      string  `json:"status,omitempty"`       // time left, or how the deadline was met
	SecondsLeft *int64  `json:"seconds_left,omitempty"` // until the deadline (negative: overdue); only while no report is sent
	Fields      *Fields `json:"fields,omitempty"`       // the current content: the updates folded
	Unsent      bool    `json:"unsent_changes,omitempty"`
}

// Update is one version of an incident's content: the fields it gave, not
// the whole report, so nothing given before is ever overwritten.
type Update struct {
	Version int       `json:"version"`
	At      time.Time `json:"at"`
	By      string    `json:"by"`
	Type    Type      `json:"type,omitempty"` // set when this version (re)classified the incident
	Fields  Fields    `json:"fields,omitzero"`
	Note    string    `json:"note,omitempty"` // what changed, or why the incident was closed
	Close   bool      `json:"close,omitempty"`
	Purged  bool      `json:"purged,omitempty"` // the content was purged from the ledger
}

// Fold returns the current content: updates merged oldest first.
func Fold(updates []Update) Fields {
	var f Fields
	for _, u := range updates {
		f = Merge(f, u.Fields)
	}
	return f
}

// Channel is how a report reached CERT-In.
type Channel string

const (
	Email Channel = "email" // sent by Meridian through its SMTP server
	Phone Channel = "phone" // reported by phone, recorded afterwards
	Fax   Channel = "fax"
)

// Delivery records one report that reached its recipient.
type Delivery struct {
	At        time.Time `json:"at"`
	Version   int       `json:"version"` // the content version that was reported
	Report    string    `json:"report"`  // "initial report", "update 1" ...
	Channel   Channel   `json:"channel"`
	Recipient string    `json:"recipient"`
	MessageID string    `json:"message_id,omitempty"` // email: the Message-ID; phone, fax: the reference given
	By        string    `json:"by"`
}

// ReportLabel names the report that follows n earlier deliveries.
func ReportLabel(n int) string {
	if n == 0 {
		return "initial report"
	}
	return fmt.Sprintf("update %d", n)
}

// AsOf returns i with the fields for readers filled in at now: the type's
// wording, the deadline's status and, while no report has been sent, the
// seconds left; with the updates loaded, also the current content.
func (i Incident) AsOf(now time.Time) Incident {
	i.TypeName = i.Type.Name()
	i.Status = i.status(now)
	i.SecondsLeft = nil
	if i.State == Noticed {
		s := int64(i.TimeLeft(now) / time.Second)
		i.SecondsLeft = &s
	}
	if len(i.Updates) > 0 {
		f := Fold(i.Updates)
		i.Fields = &f
	}
	if n := len(i.Deliveries); n > 0 {
		i.Unsent = i.Deliveries[n-1].Version < i.Version && i.State != Closed
	}
	return i
}

func (i Incident) status(now time.Time) string {
	switch {
	case !i.Reported.IsZero():
		took := i.Reported.Sub(i.Noticed)
		s := fmt.Sprintf("initial report sent %s after noticing", FormatDuration(took))
		if late := i.Reported.Sub(i.Deadline); late > 0 {
			s += fmt.Sprintf(", %s late", FormatDuration(late))
		} else {
			s += ", in time"
		}
		if i.State == Closed {
			s = "closed; " + s
		}
		return s
	case i.State == Closed:
		return "closed without a report"
	}
	return FormatLeft(i.TimeLeft(now))
}
