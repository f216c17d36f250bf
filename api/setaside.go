package api

import (
	"context"
	"errors"
	"io"
	"net/url"
	"time"
)

// Reasons a gateway set a session record aside instead of delivering it.
const (
	// SetAsideRefused: the control server refused the record as wrong
	// (400), as one that ends before its start.
	SetAsideRefused = "refused"
	// SetAsideNoDuty: the control server took the record but did not
	// store it, as no duty required it when it arrived (the gateway's
	// place, the jurisdiction or the device's tenant had changed).
	SetAsideNoDuty = "no_duty"
)

// SetAsideGroup is the records a gateway set aside for one reason: how
// many, their ids (random, made by the gateway: no personal data) and the
// oldest one's start.
type SetAsideGroup struct {
	Reason string    `json:"reason"`
	Count  int       `json:"count"`
	IDs    []string  `json:"ids,omitempty"` // at most MaxSetAsideIDs
	Oldest time.Time `json:"oldest,omitzero"`
}

// MaxSetAsideIDs bounds the ids a gateway reports per reason.
const MaxSetAsideIDs = 1000

// GatewayRecords is what a gateway holds of session records it has not
// delivered, as last reported (GET /gateways/{name}/records).
type GatewayRecords struct {
	Gateway    string          `json:"gateway"`
	ReportedAt time.Time       `json:"reported_at,omitzero"` // zero: the gateway has not reported since the control server started
	Spooled    int             `json:"spooled"`              // records waiting in the spool
	SetAside   []SetAsideGroup `json:"set_aside"`
	// ResendPending lists the reasons whose records the gateway is to send
	// again at its next report; DiscardPending, those it is to delete.
	ResendPending  []string `json:"resend_pending,omitempty"`
	DiscardPending []string `json:"discard_pending,omitempty"`
}

// ResendRequest is the body of POST /gateways/{name}/records/resend: the
// reasons whose set-aside records to send again (empty: all).
type ResendRequest struct {
	Reasons []string `json:"reasons,omitempty"`
}

// GatewayReportReply answers POST /gateway/report. A control server older
// than the field answers 204 with no body: the zero value.
type GatewayReportReply struct {
	// Resend lists the reasons whose set-aside records the gateway sends
	// again: it moves them back into its spool.
	Resend []string `json:"resend,omitempty"`
	// Discard lists the reasons whose set-aside records the gateway
	// deletes: only SetAsideNoDuty, once the operator has confirmed that
	// no duty requires them.
	Discard []string `json:"discard,omitempty"`
	// PurgeSetAsideBefore: set-aside records whose session ended (or,
	// open, started) before it are past the retention of session records
	// and the gateway deletes them. Zero: keep them.
	PurgeSetAsideBefore time.Time `json:"purge_set_aside_before,omitzero"`
}

// ReportWithReply is Report, returning the control server's reply.
func (c *Client) ReportWithReply(ctx context.Context, r GatewayReport) (GatewayReportReply, error) {
	var out GatewayReportReply
	err := c.Do(ctx, "POST", "/gateway/report", r, &out)
	if errors.Is(err, io.EOF) { // 204 from an older control server
		err = nil
	}
	return out, err
}

// GatewayRecords returns what gateway name last reported of the session
// records it holds undelivered.
func (c *Client) GatewayRecords(ctx context.Context, name string) (GatewayRecords, error) {
	var out GatewayRecords
	return out, c.Do(ctx, "GET", "/gateways/"+url.PathEscape(name)+"/records", nil, &out)
}

// ResendGatewayRecords asks gateway name to send its set-aside records
// again at its next report.
func (c *Client) ResendGatewayRecords(ctx context.Context, name string, req ResendRequest) (GatewayRecords, error) {
	var out GatewayRecords
	return out, c.Do(ctx, "POST", "/gateways/"+url.PathEscape(name)+"/records/resend", req, &out)
}

// DiscardGatewayRecords asks gateway name to delete, at its next report,
// the records it set aside as no duty required them.
func (c *Client) DiscardGatewayRecords(ctx context.Context, name string) (GatewayRecords, error) {
	var out GatewayRecords
	return out, c.Do(ctx, "POST", "/gateways/"+url.PathEscape(name)+"/records/discard", nil, &out)
}
