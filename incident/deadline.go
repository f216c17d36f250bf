package incident

import (
	"fmt"
	"strings"
	"time"
)

// DefaultDeadline is the reporting deadline when no node carries an
// incident-reporting duty: CERT-In's 6 hours, kept as a target.
const DefaultDeadline = 6 * time.Hour

// DefaultRecipient is where incident reports go unless a duty or the
// sender names another address: CERT-In's incident desk.
const DefaultRecipient = "incident@cert-in.org.in"

// Clock tells the time; tests use a fake one.
type Clock interface{ Now() time.Time }

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

// Deadline is when the initial report is due: within the duty's deadline
// of the time the incident was noticed (or the operator was told of it).
func Deadline(noticed time.Time, within time.Duration) time.Time {
	return noticed.Add(within)
}

// TimeLeft is the time until the deadline at now; negative when overdue.
func (i Incident) TimeLeft(now time.Time) time.Duration { return i.Deadline.Sub(now) }

// FormatLeft writes time left for people: "5h12m left", "overdue by 3m".
// Time left is rounded down and time overdue up, to the minute, so the
// words never promise more time than there is. At the deadline itself
// (d == 0) a report is still in time, so it is not yet overdue.
func FormatLeft(d time.Duration) string {
	switch {
	case d < 0:
		return "overdue by " + FormatDuration(-d)
	case d < time.Minute:
		return "under a minute left"
	}
	return FormatDuration(d.Truncate(time.Minute)) + " left"
}

// FormatDuration writes d in days, hours and minutes, rounded up to the
// minute: "1d2h5m", "5h12m", "6h", "0m".
func FormatDuration(d time.Duration) string {
	m := int64((d + time.Minute - 1) / time.Minute)
	if d <= 0 {
		return "0m"
	}
	var b strings.Builder
	for _, u := range []struct {
		n    int64
		unit string
	}{{m / (24 * 60), "d"}, {m / 60 % 24, "h"}, {m % 60, "m"}} {
		if u.n > 0 {
			fmt.Fprintf(&b, "%d%s", u.n, u.unit)
		}
	}
	return b.String()
}

// AlertKind names an alert about an incident's deadline.
type AlertKind string

const (
	OneHourLeft AlertKind = "one-hour-left" // an hour or less is left to send the initial report
	Overdue     AlertKind = "overdue"       // the deadline passed with no report sent
)

// AlertKinds are the kinds of alert, in the order they fire.
var AlertKinds = []AlertKind{OneHourLeft, Overdue}

// alertBefore is how long before the deadline the first alert fires.
const alertBefore = time.Hour

// FiredAlert records an alert that fired; each kind fires once per
// incident.
type FiredAlert struct {
	Kind AlertKind `json:"kind"`
	At   time.Time `json:"at"`
}

// Alert is an alert that is due. It carries no personal data: it is logged
// and posted to the operator's webhook.
type Alert struct {
	Incident    int64     `json:"incident"`
	Type        Type      `json:"type"`
	TypeName    string    `json:"type_name"`
	Kind        AlertKind `json:"alert"`
	Deadline    time.Time `json:"deadline"`
	SecondsLeft int64     `json:"seconds_left"` // negative when overdue
	TimeLeft    string    `json:"time_left"`
}

// Due returns the alerts due at now: for each incident still waiting for
// its initial report, "overdue" once the deadline has passed (a report
// sent at the deadline is in time: "within 6 hours"), or
// "one-hour-left" within the last hour, unless that kind has fired
// already. An incident first seen overdue gets only "overdue": an hour-left
// warning after the fact would be noise.
func Due(incs []Incident, now time.Time) []Alert {
	var out []Alert
	for _, i := range incs {
		if i.State != Noticed {
			continue
		}
		left := i.TimeLeft(now)
		kind, ok := alertDue(left, i.Alerts)
		if !ok {
			continue
		}
		out = append(out, Alert{Incident: i.ID, Type: i.Type, TypeName: i.Type.Name(), Kind: kind,
			Deadline: i.Deadline, SecondsLeft: int64(left / time.Second), TimeLeft: FormatLeft(left)})
	}
	return out
}

// alertDue says which alert is due with left until the deadline, if one
// is and it has not fired.
func alertDue(left time.Duration, fired []FiredAlert) (AlertKind, bool) {
	var kind AlertKind
	switch {
	case left < 0:
		kind = Overdue
	case left <= alertBefore:
		kind = OneHourLeft
	default:
		return "", false
	}
	for _, a := range fired {
		if a.Kind == kind {
			return "", false
		}
	}
	return kind, true
}
