package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/incident"
)

// ICTLogEntry is one event of the ICT log (CERT-In direction (iv)): what
// happened on which node, with the node's physical country when it was
// recorded. Nothing in it names a person: the actor is an admin token's id
// and name, a gateway's name, or empty for an unauthenticated caller, and
// details hold routes, counts and names of things, never addresses.
type ICTLogEntry struct {
	ID       int64           `json:"id"`
	At       time.Time       `json:"at"`
	Node     string          `json:"node"`    // ControlNode or a gateway's name
	Country  string          `json:"country"` // where the node physically stood
	Category string          `json:"category"`
	Event    string          `json:"event"`
	Outcome  string          `json:"outcome"` // success, failure or info
	Actor    string          `json:"actor,omitempty"`
	Details  json.RawMessage `json:"details,omitempty"`
	// KeepDays is the retention of the duty it was recorded under.
	KeepDays int `json:"keep_days"`
}

// ICTLogStatus is where the ICT log is kept, which duties it serves and
// what it holds (GET /ict-logs/status).
type ICTLogStatus struct {
	// Location is the country where the operator keeps the logs
	// (--ict-log-location), "" when not configured.
	Location     string `json:"location,omitempty"`
	LocationName string `json:"location_name,omitempty"`
	// ControlCountry is where the control server, whose database holds the
	// log, stands by its declared place; "" when it has none.
	ControlCountry string `json:"control_country,omitempty"`
	// Duties lists the nodes whose place brings an ICT-log duty; only
	// their events are recorded.
	Duties []ICTLogDuty `json:"duties"`
	// KeepDays is the longest retention any of those duties sets now.
	KeepDays int       `json:"keep_days"`
	Entries  int64     `json:"entries"`
	Oldest   time.Time `json:"oldest,omitzero"`
	Newest   time.Time `json:"newest,omitzero"`
	Dropped  uint64    `json:"dropped,omitempty"` // events lost to a full buffer since the server started
	Notes    []string  `json:"notes,omitempty"`
}

// ICTLogDuty is one node's ICT-log duty.
type ICTLogDuty struct {
	Node     string `json:"node"`
	Country  string `json:"country"`
	KeepDays int    `json:"keep_days"`
	Why      string `json:"why"`
}

// GatewayCounters are a gateway's running totals of events the control
// server logs and watches, since the gateway started. They are aggregate:
// nothing names a peer or an address.
type GatewayCounters struct {
	// UnderLoad counts the times WireGuard went into handshake
	// rate-limiting (cookie replies and per-source limits), which it does
	// when handshakes queue up faster than they are processed.
	UnderLoad uint64 `json:"under_load"`
	// EgressDenied counts flows the userspace exit's egress policy refused.
	EgressDenied uint64 `json:"egress_denied"`
}

// CandidateState is where an incident candidate stands.
type CandidateState string

const (
	CandidatePending   CandidateState = "pending"
	CandidateConfirmed CandidateState = "confirmed"
	CandidateDismissed CandidateState = "dismissed"
)

// IncidentCandidate is something the platform saw that may be a reportable
// incident. An operator confirms it (an incident is added, noticed at
// DetectedAt) or dismisses it with a reason.
type IncidentCandidate struct {
	ID    int64          `json:"id"`
	Kind  string         `json:"kind"` // handshake-flood, ledger-verify-failed, admin-login-failures
	Node  string         `json:"node"` // where it was seen
	Types []int          `json:"types"`
	State CandidateState `json:"state"`
	// Summary says what was seen, for people; it names no person.
	Summary    string          `json:"summary"`
	Details    json.RawMessage `json:"details,omitempty"`
	DetectedAt time.Time       `json:"detected_at"` // the first sighting: the incident's noticed at
	// Clock is the control node's sync state at the first sighting: the
	// incident's clock at notice. Nil for candidates from before it was
	// kept.
	Clock      *ClockSync `json:"clock,omitempty"`
	LastSeenAt time.Time  `json:"last_seen_at"`
	Sightings  int        `json:"sightings"` // detections merged into this candidate while pending
	DecidedAt  time.Time  `json:"decided_at,omitzero"`
	DecidedBy  string     `json:"decided_by,omitempty"`
	Reason     string     `json:"reason,omitempty"` // why it was dismissed
	Incident   int64      `json:"incident,omitempty"`
}

// CandidateConfirm confirms a candidate (POST
// /incidents/candidates/{id}/confirm). Type defaults to the candidate's
// first type.
type CandidateConfirm struct {
	Type int    `json:"type,omitempty"`
	Note string `json:"note,omitempty"`
}

// CandidateDismiss dismisses a candidate (POST
// /incidents/candidates/{id}/dismiss).
type CandidateDismiss struct {
	Reason string `json:"reason"`
}

// ICTLogStatus reads where the ICT log is kept and what it holds.
func (c *Client) ICTLogStatus(ctx context.Context) (ICTLogStatus, error) {
	var st ICTLogStatus
	return st, c.Do(ctx, "GET", "/ict-logs/status", nil, &st)
}

// ExportHeader is the trailer in which the server sends the SHA-256 of an
// ICT log export, so the client can check that it got every byte.
const ExportHeader = "Meridian-Export-Sha256"

// ExportICTLog writes the ICT log entries of [from, to) to w as JSON lines,
// and returns how many there were and the SHA-256 of what was written,
// which the server's own matches.
func (c *Client) ExportICTLog(ctx context.Context, from, to string, w io.Writer) (n int64, sum string, err error) {
	q := url.Values{"from": {from}, "to": {to}}
	req, err := http.NewRequestWithContext(ctx, "GET", c.base.String()+Prefix+"/ict-logs?"+q.Encode(), nil)
	if err != nil {
		return 0, "", err
	}
	if tok := c.bearerToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return 0, "", &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	h := sha256.New()
	lines := &lineCounter{}
	if _, err := io.Copy(io.MultiWriter(w, h, lines), resp.Body); err != nil {
		return 0, "", err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if want := resp.Trailer.Get(ExportHeader); want != sum {
		return 0, "", fmt.Errorf("the export is incomplete: the server sent SHA-256 %q, %s arrived", want, sum)
	}
	return lines.n, sum, nil
}

type lineCounter struct{ n int64 }

func (l *lineCounter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' {
			l.n++
		}
	}
	return len(p), nil
}

// IncidentCandidates lists candidates: pending ones, or all.
func (c *Client) IncidentCandidates(ctx context.Context, all bool) ([]IncidentCandidate, error) {
	var out []IncidentCandidate
	p := "/incidents/candidates"
	if all {
		p += "?all=true"
	}
	return out, c.Do(ctx, "GET", p, nil, &out)
}

// ConfirmCandidate adds the incident a candidate describes to the register.
func (c *Client) ConfirmCandidate(ctx context.Context, id int64, r CandidateConfirm) (incident.Incident, error) {
	var i incident.Incident
	return i, c.Do(ctx, "POST", fmt.Sprintf("/incidents/candidates/%d/confirm", id), r, &i)
}

// DismissCandidate records that a candidate is not an incident, and why.
func (c *Client) DismissCandidate(ctx context.Context, id int64, reason string) (IncidentCandidate, error) {
	var out IncidentCandidate
	return out, c.Do(ctx, "POST", fmt.Sprintf("/incidents/candidates/%d/dismiss", id), CandidateDismiss{Reason: reason}, &out)
}
