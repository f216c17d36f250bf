package api

import (
	"context"
	"time"
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

// TimeState sums up a node's clock.
type TimeState string

const (
	TimeUnknown     TimeState = "unknown"      // the node does not know its duties yet and has no sources of its own
	TimeNotRequired TimeState = "not-required" // no clock-sync duty and no sources set on the node: nothing is queried
	TimeWaiting     TimeState = "waiting"      // no usable answer yet, and the no-source time has not passed
	TimeSynced      TimeState = "synced"       // a source answered recently and the offset is within bounds
	TimeOffsetAlarm TimeState = "offset-alarm" // the best source's offset exceeds the bound
	TimeNoSource    TimeState = "no-source"    // no source answered usably for longer than the no-source time
)

// TimeStatus is a node's clock as its time monitor saw it at one moment.
// Records and incidents carry it as "the node's sync state when taken".
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
}

// Synced reports whether the node's clock was in sync with its sources.
func (s TimeStatus) Synced() bool { return s.State == TimeSynced }

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
