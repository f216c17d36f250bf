package api

import (
	"context"
	"fmt"

	"github.com/meridian-vpn/meridian/incident"
)

// IncidentRequest adds an incident to the register (POST /incidents). The
// form's fields may be partial: later updates complete them.
type IncidentRequest struct {
	Type int `json:"type"` // Annexure I number, 1-20
	// NoticedAt is when the incident was noticed or reported to the
	// operator, RFC 3339 with a zone: the reporting deadline counts from it.
	NoticedAt string `json:"noticed_at"`
	incident.Fields
	Note string `json:"note,omitempty"`
}

// IncidentUpdate adds a version to an incident (POST
// /incidents/{id}/updates): the fields it gives replace earlier values,
// which stay in the history.
type IncidentUpdate struct {
	Type int `json:"type,omitempty"` // reclassify, if set
	incident.Fields
	Note string `json:"note,omitempty"`
}

// IncidentClose closes an incident (POST /incidents/{id}/close).
type IncidentClose struct {
	Reason string `json:"reason"`
}

// IncidentSend delivers the incident's report by email (POST
// /incidents/{id}/send). Without To, it goes to the incident's recipient
// (incident@cert-in.org.in unless a duty names another).
type IncidentSend struct {
	To []string `json:"to,omitempty"`
}

// IncidentDelivery records a report made outside Meridian (POST
// /incidents/{id}/deliveries): by phone, by fax, or by email from another
// mailer.
type IncidentDelivery struct {
	Channel   string `json:"channel"` // phone, fax or email
	At        string `json:"at"`      // RFC 3339 with a zone
	To        string `json:"to"`      // the number or address reported to
	Reference string `json:"reference,omitempty"`
}

// OrderRequest records an order of CERT-In (POST /orders).
type OrderRequest struct {
	Reference  string `json:"reference"`
	ReceivedAt string `json:"received_at"` // RFC 3339 with a zone
	DueAt      string `json:"due_at"`      // RFC 3339 with a zone
	Request    string `json:"request"`     // what it asks for, in which format
}

// OrderAnswer records the answer to an order (POST /orders/{id}/answer).
type OrderAnswer struct {
	AnsweredAt string `json:"answered_at,omitempty"` // RFC 3339 with a zone; default now
	Answer     string `json:"answer"`                // what was provided, and how
}

// CreateIncident adds an incident to the register.
func (c *Client) CreateIncident(ctx context.Context, r IncidentRequest) (incident.Incident, error) {
	var i incident.Incident
	return i, c.Do(ctx, "POST", "/incidents", r, &i)
}

// Incidents lists the register: open incidents, or all.
func (c *Client) Incidents(ctx context.Context, all bool) ([]incident.Incident, error) {
	var out []incident.Incident
	p := "/incidents"
	if all {
		p += "?all=true"
	}
	return out, c.Do(ctx, "GET", p, nil, &out)
}

// Incident returns an incident with its current content and history.
func (c *Client) Incident(ctx context.Context, id int64) (incident.Incident, error) {
	var i incident.Incident
	return i, c.Do(ctx, "GET", fmt.Sprintf("/incidents/%d", id), nil, &i)
}

// UpdateIncident adds a version to an incident.
func (c *Client) UpdateIncident(ctx context.Context, id int64, u IncidentUpdate) (incident.Incident, error) {
	var i incident.Incident
	return i, c.Do(ctx, "POST", fmt.Sprintf("/incidents/%d/updates", id), u, &i)
}

// CloseIncident closes an incident with a reason.
func (c *Client) CloseIncident(ctx context.Context, id int64, reason string) (incident.Incident, error) {
	var i incident.Incident
	return i, c.Do(ctx, "POST", fmt.Sprintf("/incidents/%d/close", id), IncidentClose{Reason: reason}, &i)
}

// IncidentReport renders the incident's next report; nothing is sent.
func (c *Client) IncidentReport(ctx context.Context, id int64) (incident.Report, error) {
	var r incident.Report
	return r, c.Do(ctx, "GET", fmt.Sprintf("/incidents/%d/report", id), nil, &r)
}

// SendIncident emails the incident's report and returns the recorded
// delivery.
func (c *Client) SendIncident(ctx context.Context, id int64, to []string) (incident.Delivery, error) {
	var d incident.Delivery
	return d, c.Do(ctx, "POST", fmt.Sprintf("/incidents/%d/send", id), IncidentSend{To: to}, &d)
}

// RecordIncidentDelivery records a report made by phone, fax or another
// mailer.
func (c *Client) RecordIncidentDelivery(ctx context.Context, id int64, d IncidentDelivery) (incident.Delivery, error) {
	var out incident.Delivery
	return out, c.Do(ctx, "POST", fmt.Sprintf("/incidents/%d/deliveries", id), d, &out)
}

// POC returns the point of contact for CERT-In.
func (c *Client) POC(ctx context.Context) (incident.PointOfContact, error) {
	var p incident.PointOfContact
	return p, c.Do(ctx, "GET", "/poc", nil, &p)
}

// SetPOC designates the point of contact; earlier ones stay on record.
func (c *Client) SetPOC(ctx context.Context, p incident.PointOfContact) (incident.PointOfContact, error) {
	var out incident.PointOfContact
	return out, c.Do(ctx, "PUT", "/poc", p, &out)
}

// POCLetter renders the notification of the point of contact to CERT-In.
func (c *Client) POCLetter(ctx context.Context) (incident.Letter, error) {
	var l incident.Letter
	return l, c.Do(ctx, "GET", "/poc/letter", nil, &l)
}

// CreateOrder records an order of CERT-In.
func (c *Client) CreateOrder(ctx context.Context, r OrderRequest) (incident.Order, error) {
	var o incident.Order
	return o, c.Do(ctx, "POST", "/orders", r, &o)
}

// Orders lists the orders of CERT-In, open ones first.
func (c *Client) Orders(ctx context.Context) ([]incident.Order, error) {
	var out []incident.Order
	return out, c.Do(ctx, "GET", "/orders", nil, &out)
}

// Order returns one order with what it asks for and the answer.
func (c *Client) Order(ctx context.Context, id int64) (incident.Order, error) {
	var o incident.Order
	return o, c.Do(ctx, "GET", fmt.Sprintf("/orders/%d", id), nil, &o)
}

// AnswerOrder records the answer to an order.
func (c *Client) AnswerOrder(ctx context.Context, id int64, a OrderAnswer) (incident.Order, error) {
	var o incident.Order
	return o, c.Do(ctx, "POST", fmt.Sprintf("/orders/%d/answer", id), a, &o)
}
