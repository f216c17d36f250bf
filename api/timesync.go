package api

import (
	"context"
	"time"

	"github.com/meridian-vpn/meridian/timesync/syncstamp"
)

// TimePlan says what a node's clock is checked against: the NTP sources of
// the clock-sync duty that its place brings, as the control server decides
// it (GET /gateway/time-plan for a gateway).
type TimePlan struct {
	Required bool `json:"required"` // a clock-sync duty applies to the node
	// Why cites the duty ("IN / cert-in-2022 / direction (i)"), or says why
	// none applies.
	Why       string        `json:"why,omitempty"`
	Sources   []string      `json:"sources,omitempty"`    // the duty's NTP servers: "host" or "host:port"
	MaxOffset time.Duration `json:"max_offset,omitempty"` // nanoseconds; larger offsets are flagged
}

// TimeState sums up a node's clock. Package syncstamp defines it (and
// ClockSync), so that packages api depends on, such as incident, can carry
// a node's sync state too.
type TimeState = syncstamp.State

const (
	TimeUnknown     = syncstamp.Unknown     // the node does not know its duties yet and has no sources of its own
	TimeNotRequired = syncstamp.NotRequired // no clock-sync duty and no sources set on the node: nothing is queried
	TimeWaiting     = syncstamp.Waiting     // no usable answer yet, and the no-source time has not passed
	TimeSynced      = syncstamp.Synced      // a source answered recently and the offset is within bounds
	TimeOffsetAlarm = syncstamp.OffsetAlarm // the best source's offset exceeds the bound
	TimeNoSource    = syncstamp.NoSource    // no source answered usably for longer than the no-source time
	// TimeUnwatched is the state a record carries when its node runs no
	// time monitor: nothing is known of its clock. A monitor never reports
	// it.
	TimeUnwatched = syncstamp.Unwatched
)

// ClockSync is a node's sync state in brief, as records and incidents
// carry it: "the node's sync state at the moment they were taken". Its
// String words it ("synced, offset +2.1 ms from samay1.nic.in"). A record
// of a node without a time monitor says TimeUnwatched, or, where the field
// is a pointer that the record may lack (session records), leaves it nil.
type ClockSync = syncstamp.Stamp

// TimeStatus is a node's clock as its time monitor saw it at one moment.
// Records and incidents carry it in brief (Sync) as "the node's sync state
// when taken".
type TimeStatus struct {
	At    time.Time `json:"at"` // when the snapshot was taken, by the node's clock
	State TimeState `json:"state"`
	Since time.Time `json:"since,omitzero"` // when the alarm began (alarm states only)

	Required   bool          `json:"required"`             // per the node's last known plan
	Why        string        `json:"why,omitempty"`        // the plan's Why
	Overridden bool          `json:"overridden,omitempty"` // sources set on the node replace the duty's
	MaxOffset  time.Duration `json:"max_offset"`           // nanoseconds
	Best       string        `json:"best,omitempty"`       // the source whose sample counts
	Offset     time.Duration `json:"offset"`               // the best source's clock minus the node's, nanoseconds
	Sources    []TimeSource  `json:"sources"`              // every source queried
	Kernel     KernelClock   `json:"kernel"`               // whether the operating system disciplines the clock
	// Trace is the node's traceability to the duty's reference sources
	// when it follows other sources (Overridden, with a duty); nil
	// otherwise.
	Trace *TimeTrace `json:"trace,omitempty"`
}

// TimeTrace is how far a node's own sources deviate from its duty's
// reference sources (NIC/NPL), which the monitor queries at a low rate.
type TimeTrace struct {
	State        syncstamp.Trace `json:"state"`                // traceable or not-traceable
	Reference    string          `json:"reference,omitempty"`  // the reference of the last measurement
	Deviation    time.Duration   `json:"deviation"`            // the last measurement: node's best source minus the reference, nanoseconds
	MaxDeviation time.Duration   `json:"max_deviation"`        // largest |deviation| over Window, nanoseconds
	Window       time.Duration   `json:"window"`               // nanoseconds
	Bound        time.Duration   `json:"bound"`                // deviation alarm threshold, nanoseconds
	LastAnswer   time.Time       `json:"last_answer,omitzero"` // when a reference last answered
	Alarm        string          `json:"alarm,omitempty"`      // deviation or no-reference
	AlarmSince   time.Time       `json:"alarm_since,omitzero"`
	Measurements int             `json:"measurements"` // within Window
}

// Synced reports whether the node's clock was in sync with its sources.
func (s TimeStatus) Synced() bool { return s.State == TimeSynced }

// Sync is s in brief, as records carry it: the state, the best source and
// its offset, and whether the kernel's clock is disciplined.
func (s TimeStatus) Sync() ClockSync {
	c := ClockSync{At: s.At, State: s.State, Source: s.Best, Offset: s.Offset, KernelSynced: s.Kernel.Known && s.Kernel.Synced}
	switch {
	case s.Trace != nil:
		c.Trace, c.TraceReference = s.Trace.State, s.Trace.Reference
		if c.Trace == syncstamp.Traceable {
			c.TraceWithin = s.Trace.MaxDeviation
		}
	case s.Required && !s.Overridden && s.State == TimeSynced:
		c.Trace = syncstamp.SyncedToReference
	}
	return c
}

// TimeSource is what one NTP server said. Offset, Delay, Stratum, RefID and
// Leap come from its last usable answer, at LastSuccess.
type TimeSource struct {
	Source      string        `json:"source"` // as configured: "host" or "host:port"
	Offset      time.Duration `json:"offset"` // nanoseconds
	Delay       time.Duration `json:"delay"`  // round trip, nanoseconds
	Stratum     int           `json:"stratum"`
	RefID       string        `json:"ref_id"`
	Leap        string        `json:"leap"` // none, insert or delete (a second at the end of the day)
	LastSuccess time.Time     `json:"last_success,omitzero"`
	// LastError is the category of the last failure (timeout, refused,
	// dns, network, unsynchronised, bogus reply, kiss RATE …), at
	// LastErrorAt; older than LastSuccess when the source has recovered.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	HoldUntil   time.Time `json:"hold_until,omitzero"` // not queried before, after a kiss-o'-death
}

// KernelClock is the operating system's view of its clock.
type KernelClock struct {
	Known    bool          `json:"known"`     // false where it cannot be read
	Synced   bool          `json:"synced"`    // a time daemon disciplines the clock (STA_UNSYNC clear)
	MaxError time.Duration `json:"max_error"` // nanoseconds
	EstError time.Duration `json:"est_error"` // nanoseconds
}

// NodeTime is one node in GET /time.
type NodeTime struct {
	Node   string      `json:"node"`             // ControlNode or a gateway's name
	Plan   TimePlan    `json:"plan"`             // what the node's duties ask, decided now
	Status *TimeStatus `json:"status,omitempty"` // the node's latest status; nil if it has none
}

// Time lists the time status of the control server and every gateway.
func (c *Client) Time(ctx context.Context) ([]NodeTime, error) {
	var out []NodeTime
	return out, c.Do(ctx, "GET", "/time", nil, &out)
}

// TimePlan asks the control server what this gateway's clock is checked
// against.
func (c *Client) TimePlan(ctx context.Context) (TimePlan, error) {
	var p TimePlan
	return p, c.Do(ctx, "GET", "/gateway/time-plan", nil, &p)
}
