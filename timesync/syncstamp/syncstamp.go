// Package syncstamp is a node's clock sync state in brief: the stamp that
// compliance records, session records and incidents carry as "the node's
// sync state at the moment they were taken" (CERT-In direction (i)). It
// imports nothing of Meridian, so that every package may carry a stamp;
// package api names its types (api.TimeState, api.ClockSync) and makes
// stamps from a monitor's status.
package syncstamp

import (
	"fmt"
	"time"
)

// State sums up a node's clock.
type State string

const (
	Unknown     State = "unknown"      // the node does not know its duties yet and has no sources of its own
	NotRequired State = "not-required" // no clock-sync duty and no sources set on the node: nothing is queried
	Waiting     State = "waiting"      // no usable answer yet, and the no-source time has not passed
	Synced      State = "synced"       // a source answered recently and the offset is within bounds
	OffsetAlarm State = "offset-alarm" // the best source's offset exceeds the bound
	NoSource    State = "no-source"    // no source answered usably for longer than the no-source time
	// Unwatched: the node runs no time monitor, so nothing is known of its
	// clock. A stamp says so rather than leave the state out: it never
	// passes for synced.
	Unwatched State = "unwatched"
)

// Stamp is a node's sync state at one moment, as a record or an incident
// carries it.
type Stamp struct {
	At     time.Time     `json:"at"` // when it was taken, by the node's clock
	State  State         `json:"state"`
	Source string        `json:"source,omitempty"` // the best source, whose offset counts (synced and offset-alarm)
	Offset time.Duration `json:"offset,omitempty"` // that source's clock minus the node's, nanoseconds
	// KernelSynced: the operating system said a time daemon disciplines
	// the clock. False also where the kernel could not be read.
	KernelSynced bool `json:"kernel_synced,omitempty"`
	// Trace says whether the clock was traceable to the duty's reference
	// sources (NIC/NPL) when the node follows other sources; empty when
	// the node follows the duty's sources themselves or has no duty.
	Trace Trace `json:"trace,omitempty"`
	// TraceWithin is the largest deviation between the node's sources and
	// the reference over the window (traceable only), nanoseconds.
	TraceWithin time.Duration `json:"trace_within,omitempty"`
	// TraceReference is the reference source the deviation was measured
	// against.
	TraceReference string `json:"trace_reference,omitempty"`
}

// Trace is whether a node's clock was traceable to its duty's reference.
type Trace string

const (
	SyncedToReference Trace = "synced-to-reference" // the node follows the duty's sources themselves
	Traceable         Trace = "traceable"           // other sources, within the bound of the reference
	NotTraceable      Trace = "not-traceable"       // other sources, deviating over the bound or with no reference answering
)

// UnwatchedAt returns the stamp of a node that runs no time monitor, at.
func UnwatchedAt(at time.Time) Stamp { return Stamp{At: at, State: Unwatched} }

// String words the stamp for people: "synced, offset +2.1 ms from
// samay1.nic.in, kernel synced".
func (s Stamp) String() string {
	var w string
	switch s.State {
	case Synced:
		w = fmt.Sprintf("synced, offset %s from %s", FormatOffset(s.Offset), s.Source)
	case OffsetAlarm:
		w = fmt.Sprintf("NOT in sync (offset alarm), offset %s from %s", FormatOffset(s.Offset), s.Source)
	case NoSource:
		w = "NOT in sync (no source): no NTP source had answered for too long"
	case Waiting:
		w = "not yet known: waiting for a first answer from the NTP sources"
	case NotRequired:
		w = "not checked: no clock-sync duty and no NTP source set on the node"
	case Unknown:
		w = "unknown: the node did not know its clock-sync duty yet"
	case Unwatched:
		w = "not watched: the node runs no time monitor"
	default:
		w = fmt.Sprintf("state %q", string(s.State))
	}
	if s.KernelSynced {
		w += ", kernel synced"
	}
	switch s.Trace {
	case SyncedToReference:
		w += ", synced to the reference"
	case Traceable:
		w += fmt.Sprintf(", traceable within %s of %s", FormatDeviation(s.TraceWithin), s.TraceReference)
	case NotTraceable:
		w += ", NOT traceable to the reference"
	}
	return w
}

// FormatOffset writes an offset with its sign, in µs, ms or s: "+2.1 ms",
// "-35 µs", "+1.250 s".
func FormatOffset(d time.Duration) string {
	a := max(d, -d)
	switch {
	case a < time.Millisecond:
		return fmt.Sprintf("%+d µs", d.Microseconds())
	case a < time.Second:
		return fmt.Sprintf("%+.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%+.3f s", d.Seconds())
}

// FormatDeviation writes a deviation without sign: "12.0 ms".
func FormatDeviation(d time.Duration) string {
	return FormatOffset(max(d, -d))[1:]
}
