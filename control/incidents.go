package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/incident"
	"github.com/meridian-vpn/meridian/jurisdiction"
	"github.com/meridian-vpn/meridian/ledger"
	mailer "github.com/meridian-vpn/meridian/mail"
	"github.com/meridian-vpn/meridian/store"
)

// The incident register (CERT-In directions (ii) and (iii)). What reports,
// the point of contact and orders say may be personal data, so it is kept
// in the ledger (sealed, hash-chained, one entry per version) and every
// read of it is recorded there, under the case "incident N", "point of
// contact" or "CERT-In order REF". The store's tables index the entries and
// hold the rest: types, states, times.
const (
	kindIncidentVersion = "incident-version"
	kindPOC             = "cert-in-poc"
	kindOrder           = "cert-in-order"
	kindOrderAnswer     = "cert-in-order-answer"
)

type incidentVersionEntry struct {
	Incident int64 `json:"incident"`
	incident.Update
}

type orderEntry struct {
	Reference string `json:"reference"`
	Request   string `json:"request,omitempty"`
	Answer    string `json:"answer,omitempty"`
}

// maxFutureSkew is how far ahead of the server's clock a time given as
// past (noticed, reported, received) may be: clocks differ a little.
const maxFutureSkew = 5 * time.Minute

// reportingDuty is where the deadline and recipient of reports come from.
type reportingDuty struct {
	within    time.Duration
	recipient string
	why       string
}

// incidentDuty decides an incident's deadline. Incident reporting is the
// operator's duty, not a node's: it applies when any node (the control
// server or a gateway, in service or not) stands where a duty profile
// carries incident reporting, and the shortest such deadline wins. When no
// node does, incidents are still registered, with CERT-In's 6 hours as a
// target and a why that says it is not a duty.
func (s *Server) incidentDuty(ctx context.Context) (reportingDuty, error) {
	best := reportingDuty{within: incident.DefaultDeadline, recipient: incident.DefaultRecipient,
		why: "no node stands where an incident-reporting duty applies; CERT-In's 6 hours is kept as the target"}
	found := false
	err := s.eachNodeDuty(ctx, jurisdiction.IncidentReporting, func(node string, d jurisdiction.Duty) {
		if !found || d.Deadline < best.within {
			best, found = reportingDuty{within: d.Deadline, recipient: d.Recipient, why: fmt.Sprintf("%s (node %s)", d.Why, node)}, true
		}
	})
	return best, err
}

// pocRecipient is where the point of contact's details go: the address of
// the first point-of-contact duty of any node, or CERT-In's.
func (s *Server) pocRecipient(ctx context.Context) (string, error) {
	to := incident.DefaultPOCRecipient
	found := false
	err := s.eachNodeDuty(ctx, jurisdiction.PointOfContact, func(_ string, d jurisdiction.Duty) {
		if !found && d.Recipient != "" {
			to, found = d.Recipient, true
		}
	})
	return to, err
}

// eachNodeDuty calls fn for every duty of kind k carried by a placed node,
// nodes in name order.
func (s *Server) eachNodeDuty(ctx context.Context, k jurisdiction.DutyKind, fn func(node string, d jurisdiction.Duty)) error {
	f, err := s.loadFleet(ctx)
	if err != nil {
		return err
	}
	places, err := s.db.Places(ctx)
	if err != nil {
		return err
	}
	nodes := make([]string, 0, len(places))
	for n := range places {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, n := range nodes {
		duties, err := f.nodeDuties(n, places[n])
		if err != nil {
			return err
		}
		for _, d := range duties {
			if d.Kind == k {
				fn(n, d)
			}
		}
	}
	return nil
}

// incidentError answers for errors of the incident handlers: a field that
// is wrong is the caller's (400), store errors as storeError.
func (s *Server) incidentError(w http.ResponseWriter, r *http.Request, err error, notFound string) {
	var fe *incident.FieldError
	if errors.As(err, &fe) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.storeError(w, r, err, notFound)
}

// pastTime reads a time that has happened: RFC 3339 with a zone, not
// (much) in the future.
func pastTime(field, s string, now time.Time) (time.Time, error) {
	t, err := incident.ParseTime(field, s)
	if err != nil {
		return t, err
	}
	if t.After(now.Add(maxFutureSkew)) {
		return t, &incident.FieldError{Field: field, Msg: "is in the future"}
	}
	return t.Truncate(time.Second), nil
}

func (s *Server) handleIncidentTypes(w http.ResponseWriter, r *http.Request) {
	var out []incident.TypeInfo
	for _, t := range incident.Types() {
		out = append(out, incident.TypeInfo{Number: t, Name: t.Name()})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCreateIncident(w http.ResponseWriter, r *http.Request) {
	var req api.IncidentRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Type == 0 {
		writeError(w, http.StatusBadRequest, "type is required: the Annexure I number, 1 to 20 ('meridian incident types' lists them)")
		return
	}
	typ, err := incident.ParseType(req.Type)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	now := time.Now().UTC().Truncate(time.Second)
	noticed, err := pastTime("noticed_at", req.NoticedAt, now)
	if err == nil {
		err = errors.Join(req.Fields.Check(), incident.CheckText("note", &req.Note, incident.MaxLong))
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	duty, err := s.incidentDuty(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	inc := incident.Incident{Type: typ, State: incident.Noticed, Noticed: noticed, Deadline: incident.Deadline(noticed, duty.within),
		DeadlineWhy: duty.why, Recipient: duty.recipient, Version: 1, NoticeClock: s.clockNow()}
	u := incident.Update{Version: 1, At: now, By: actor(r.Context()), Type: typ, Fields: req.Fields, Note: req.Note}
	inc.ID, err = s.db.CreateIncident(r.Context(), inc, func(tx *store.Tx, id int64) error {
		return s.addIncidentVersion(r.Context(), tx, id, u)
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("incident recorded", "incident", inc.ID, "type", int(typ), "deadline", inc.Deadline)
	writeJSON(w, http.StatusCreated, inc.AsOf(time.Now()))
}

func (s *Server) addIncidentVersion(ctx context.Context, tx *store.Tx, id int64, u incident.Update) error {
	seq, err := s.ledger.Append(ctx, tx, kindIncidentVersion, incidentVersionEntry{Incident: id, Update: u})
	if err != nil {
		return err
	}
	return tx.AddIncidentVersion(ctx, id, u, seq)
}

// loadIncident reads an incident with its content from the ledger,
// recording the read under the case "incident ID".
func (s *Server) loadIncident(ctx context.Context, id int64, why string) (incident.Incident, error) {
	inc, seqs, err := s.db.Incident(ctx, id)
	if err != nil {
		return inc, err
	}
	entries, err := s.ledger.Read(ctx, ledger.Access{Who: actor(ctx), Case: fmt.Sprintf("incident %d", id), Query: why}, ledger.RecordChain, seqs...)
	if err != nil {
		return inc, err
	}
	for i, e := range entries {
		u := &inc.Updates[i]
		if e.Body == nil {
			u.Purged = true
			continue
		}
		var v incidentVersionEntry
		if err := json.Unmarshal(e.Body, &v); err != nil {
			return inc, fmt.Errorf("incident %d version %d: ledger entry %d: %w", id, u.Version, e.Seq, err)
		}
		u.Type, u.Fields, u.Note, u.Close = v.Type, v.Fields, v.Note, v.Close
	}
	return inc, nil
}

func (s *Server) handleIncidents(w http.ResponseWriter, r *http.Request) {
	all := false
	if v := r.URL.Query().Get("all"); v != "" {
		var err error
		if all, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, "all must be true or false")
			return
		}
	}
	incs, err := s.db.Incidents(r.Context(), all)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := time.Now()
	out := make([]incident.Incident, 0, len(incs))
	for _, i := range incs {
		out = append(out, i.AsOf(now))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleIncident(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "incident")
	if !ok {
		return
	}
	inc, err := s.loadIncident(r.Context(), id, "show")
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no incident %d", id))
		return
	}
	writeJSON(w, http.StatusOK, inc.AsOf(time.Now()))
}

func (s *Server) handleUpdateIncident(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "incident")
	if !ok {
		return
	}
	var req api.IncidentUpdate
	if !decode(w, r, &req) {
		return
	}
	var typ incident.Type
	var err error
	if req.Type != 0 {
		if typ, err = incident.ParseType(req.Type); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if err := errors.Join(req.Fields.Check(), incident.CheckText("note", &req.Note, incident.MaxLong)); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if typ == 0 && req.Note == "" && givesNothing(req.Fields) {
		writeError(w, http.StatusBadRequest, "an update must give at least one field of the form, a new type or a note")
		return
	}
	s.changeIncident(w, r, id, incident.Amend, incident.Update{Type: typ, Fields: req.Fields, Note: req.Note})
}

// givesNothing reports whether f, as the ledger keeps it, gives no field.
func givesNothing(f incident.Fields) bool {
	b, _ := json.Marshal(f)
	return string(b) == "{}"
}

func (s *Server) handleCloseIncident(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "incident")
	if !ok {
		return
	}
	var req api.IncidentClose
	if !decode(w, r, &req) {
		return
	}
	if err := incident.CheckText("reason", &req.Reason, incident.MaxLong); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Reason == "" {
		writeError(w, http.StatusBadRequest, "reason is required: why the incident is closed (it is kept in the history)")
		return
	}
	s.changeIncident(w, r, id, incident.Close, incident.Update{Note: req.Reason, Close: true})
}

// changeIncident adds u as the incident's next version, after event e.
func (s *Server) changeIncident(w http.ResponseWriter, r *http.Request, id int64, e incident.Event, u incident.Update) {
	now := time.Now().UTC().Truncate(time.Second)
	inc, err := s.db.ChangeIncident(r.Context(), id, func(tx *store.Tx, inc *incident.Incident) error {
		next, err := inc.State.After(e)
		if err != nil {
			return &store.ConflictError{What: fmt.Sprintf("incident %d: %v", id, err)}
		}
		u.Version, u.At, u.By = inc.Version+1, now, actor(r.Context())
		if u.Type != 0 {
			inc.Type = u.Type
		}
		if next == incident.Closed {
			inc.Closed = now
		}
		inc.State, inc.Version = next, u.Version
		return s.addIncidentVersion(r.Context(), tx, id, u)
	})
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no incident %d", id))
		return
	}
	writeJSON(w, http.StatusOK, inc.AsOf(time.Now()))
}

func (s *Server) handleIncidentReport(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "incident")
	if !ok {
		return
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "text" {
		writeError(w, http.StatusBadRequest, "format must be json or text")
		return
	}
	inc, err := s.loadIncident(r.Context(), id, "report")
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no incident %d", id))
		return
	}
	rep := incident.NewReport(inc, time.Now())
	if format == "text" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(rep.Text()))
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// maxRecipients bounds the addresses one report goes to.
const maxRecipients = 5

func (s *Server) handleSendIncident(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "incident")
	if !ok {
		return
	}
	var req api.IncidentSend
	if !decode(w, r, &req) {
		return
	}
	if s.mailer == nil {
		writeError(w, http.StatusConflict, "no SMTP server is configured (meridian control --smtp HOST:PORT --mail-from ADDRESS); nothing was sent")
		return
	}
	if len(req.To) > maxRecipients {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("to: at most %d recipients", maxRecipients))
		return
	}
	for i, a := range req.To {
		if p, err := mail.ParseAddress(a); err != nil || p.Address != a {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("to[%d] is not an email address (give the bare address, e.g. incident@cert-in.org.in)", i))
			return
		}
	}
	inc, err := s.loadIncident(r.Context(), id, "send report")
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no incident %d", id))
		return
	}
	if _, err := inc.State.After(incident.Send); err != nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("incident %d: %v; nothing was sent", id, err))
		return
	}
	to := req.To
	if len(to) == 0 {
		to = []string{inc.Recipient}
	}
	rep := incident.NewReport(inc, time.Now())
	msgID, err := s.mailer.Send(r.Context(), mailer.Message{To: to, Subject: rep.Subject(), Body: rep.Text()})
	if err != nil {
		// The error may quote the SMTP server's answer, which can name a
		// recipient: it goes to the caller, not the log.
		s.log.Warn("an incident report was not sent", "incident", id)
		writeError(w, http.StatusBadGateway, fmt.Sprintf("the report was not sent: %v", err))
		return
	}
	d := incident.Delivery{At: time.Now().UTC().Truncate(time.Second), Version: rep.Version, Report: rep.Report, Channel: incident.Email,
		Recipient: strings.Join(to, ", "), MessageID: msgID, By: actor(r.Context())}
	if err := s.recordDelivery(r.Context(), id, d); err != nil {
		s.log.Error("an incident report was sent but its delivery was not recorded", "incident", id, "message_id", msgID, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("the report was sent (Message-ID %s) but recording the delivery failed; record it with 'meridian incident reported %d --via email --to … --reference %s'", msgID, id, msgID))
		return
	}
	s.log.Info("incident report sent", "incident", id, "report", d.Report, "message_id", msgID)
	writeJSON(w, http.StatusOK, d)
}

// recordDelivery records a report that reached its recipient and moves
// the incident on: the first one is the initial report.
func (s *Server) recordDelivery(ctx context.Context, id int64, d incident.Delivery) error {
	_, err := s.db.ChangeIncident(ctx, id, func(tx *store.Tx, inc *incident.Incident) error {
		next, err := inc.State.After(incident.Send)
		if err != nil {
			return &store.ConflictError{What: fmt.Sprintf("incident %d: %v", id, err)}
		}
		if inc.Reported.IsZero() || d.At.Before(inc.Reported) {
			inc.Reported = d.At
		}
		inc.State = next
		return tx.AddIncidentDelivery(ctx, id, d)
	})
	return err
}

func (s *Server) handleRecordDelivery(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "incident")
	if !ok {
		return
	}
	var req api.IncidentDelivery
	if !decode(w, r, &req) {
		return
	}
	ch := incident.Channel(req.Channel)
	if ch != incident.Phone && ch != incident.Fax && ch != incident.Email {
		writeError(w, http.StatusBadRequest, "channel must be phone, fax or email")
		return
	}
	at, err := pastTime("at", req.At, time.Now())
	if err == nil {
		err = errors.Join(incident.CheckText("to", &req.To, incident.MaxShort), incident.CheckText("reference", &req.Reference, incident.MaxShort))
	}
	if err == nil && req.To == "" {
		err = &incident.FieldError{Field: "to", Msg: "required: the number or address reported to (CERT-In: phone 1800-11-4949, fax 1800-11-6969)"}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	inc, _, err := s.db.Incident(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no incident %d", id))
		return
	}
	if at.Before(inc.Noticed) {
		writeError(w, http.StatusBadRequest, "at: is before the incident was noticed")
		return
	}
	d := incident.Delivery{At: at, Version: inc.Version, Report: incident.ReportLabel(len(inc.Deliveries)), Channel: ch,
		Recipient: req.To, MessageID: req.Reference, By: actor(r.Context())}
	if err := s.recordDelivery(r.Context(), id, d); err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no incident %d", id))
		return
	}
	writeJSON(w, http.StatusCreated, d)
}

// loadPOC reads the current point of contact from the ledger, recording
// the read.
func (s *Server) loadPOC(ctx context.Context, why string) (incident.PointOfContact, error) {
	var p incident.PointOfContact
	seq, at, err := s.db.POCVersion(ctx)
	if err != nil {
		return p, err
	}
	entries, err := s.ledger.Read(ctx, ledger.Access{Who: actor(ctx), Case: "point of contact", Query: why}, ledger.RecordChain, seq)
	if err != nil {
		return p, err
	}
	if entries[0].Body == nil {
		return p, fmt.Errorf("the point of contact (ledger entry %d) was purged; set it again", seq)
	}
	if err := json.Unmarshal(entries[0].Body, &p); err != nil {
		return p, fmt.Errorf("point of contact: ledger entry %d: %w", seq, err)
	}
	p.UpdatedAt = at
	return p, nil
}

const noPOC = "no point of contact has been designated; set one with 'meridian poc set'"

func (s *Server) handlePOC(w http.ResponseWriter, r *http.Request) {
	p, err := s.loadPOC(r.Context(), "show")
	if err != nil {
		s.storeError(w, r, err, noPOC)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleSetPOC(w http.ResponseWriter, r *http.Request) {
	var p incident.PointOfContact
	if !decode(w, r, &p) {
		return
	}
	if err := p.Check(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p.UpdatedAt = time.Now().UTC().Truncate(time.Second)
	err := s.db.Update(r.Context(), func(tx *store.Tx) error {
		seq, err := s.ledger.Append(r.Context(), tx, kindPOC, p)
		if err != nil {
			return err
		}
		return tx.AddPOCVersion(r.Context(), seq, p.UpdatedAt, actor(r.Context()))
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handlePOCLetter(w http.ResponseWriter, r *http.Request) {
	p, err := s.loadPOC(r.Context(), "letter")
	if err != nil {
		s.storeError(w, r, err, noPOC)
		return
	}
	to, err := s.pocRecipient(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p.Letter(to, time.Now()))
}

func (s *Server) handleCreateOrder(w http.ResponseWriter, r *http.Request) {
	var req api.OrderRequest
	if !decode(w, r, &req) {
		return
	}
	o, err := incident.NewOrder(req.Reference, req.ReceivedAt, req.DueAt, req.Request)
	if err == nil {
		_, err = pastTime("received_at", req.ReceivedAt, time.Now())
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	o.ID, err = s.db.CreateOrder(r.Context(), o, actor(r.Context()), func(tx *store.Tx) (int64, error) {
		return s.ledger.Append(r.Context(), tx, kindOrder, orderEntry{Reference: o.Reference, Request: o.Request})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("CERT-In order recorded", "order", o.ID, "due", o.Due)
	writeJSON(w, http.StatusCreated, o.AsOf(time.Now()))
}

func (s *Server) handleOrders(w http.ResponseWriter, r *http.Request) {
	rows, err := s.db.Orders(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := time.Now()
	out := make([]incident.Order, 0, len(rows))
	for _, o := range rows {
		out = append(out, o.AsOf(now))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleOrder(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "order")
	if !ok {
		return
	}
	o, err := s.db.Order(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no order %d", id))
		return
	}
	seqs := []int64{o.RequestSeq}
	if o.AnswerSeq != 0 {
		seqs = append(seqs, o.AnswerSeq)
	}
	entries, err := s.ledger.Read(r.Context(), ledger.Access{Who: actor(r.Context()), Case: "CERT-In order " + o.Reference, Query: "show"}, ledger.RecordChain, seqs...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, e := range entries {
		var v orderEntry
		if e.Body == nil {
			continue // purged
		}
		if err := json.Unmarshal(e.Body, &v); err != nil {
			s.fail(w, r, fmt.Errorf("order %d: ledger entry %d: %w", id, e.Seq, err))
			return
		}
		if v.Request != "" {
			o.Request = v.Request
		}
		if v.Answer != "" {
			o.Answer = v.Answer
		}
	}
	writeJSON(w, http.StatusOK, o.AsOf(time.Now()))
}

func (s *Server) handleAnswerOrder(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "order")
	if !ok {
		return
	}
	var req api.OrderAnswer
	if !decode(w, r, &req) {
		return
	}
	at := time.Now().UTC().Truncate(time.Second)
	if req.AnsweredAt != "" {
		var err error
		if at, err = pastTime("answered_at", req.AnsweredAt, at); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	o, err := s.db.AnswerOrder(r.Context(), id, func(tx *store.Tx, o *incident.Order) (int64, error) {
		if err := o.Respond(at, req.Answer); err != nil {
			var fe *incident.FieldError
			if errors.As(err, &fe) {
				return 0, err
			}
			return 0, &store.ConflictError{What: err.Error()}
		}
		return s.ledger.Append(r.Context(), tx, kindOrderAnswer, orderEntry{Reference: o.Reference, Answer: o.Answer})
	})
	if err != nil {
		s.incidentError(w, r, err, fmt.Sprintf("no order %d", id))
		return
	}
	writeJSON(w, http.StatusOK, o.AsOf(time.Now()))
}

// incidentCheckEvery is how often the register is checked for alerts.
const incidentCheckEvery = time.Minute

// incidentAlerts raises the register's deadline alerts, of incidents and
// of CERT-In orders: in the log (a warning with the incident's number, type
// and time left, or the order's number and time left: nothing personal),
// in metrics, and to the operator's webhook if one is set. Each kind fires
// once per incident or order, recorded in the store, so restarts and
// several control servers do not repeat it.
type incidentAlerts struct {
	s           *Server
	clock       incident.Clock
	webhook     string // "" for none
	http        *http.Client
	fired       *prometheus.CounterVec
	ordersFired *prometheus.CounterVec
}

// checkWebhook checks the URL of the incident alert webhook: http or
// https, or "" for none. The error does not repeat the URL, which may hold
// a secret.
func checkWebhook(webhook string) error {
	if webhook == "" {
		return nil
	}
	u, err := url.Parse(webhook)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("incident alert webhook: want an http or https URL")
	}
	return nil
}

// newIncidentAlerts checks webhook (an http or https URL, or "") and
// registers the register's metrics.
func (s *Server) newIncidentAlerts(clock incident.Clock, webhook string) (*incidentAlerts, error) {
	if err := checkWebhook(webhook); err != nil {
		return nil, err
	}
	a := &incidentAlerts{s: s, clock: clock, webhook: webhook, http: &http.Client{Timeout: 10 * time.Second},
		fired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_incident_alerts_total", Help: "Incident deadline alerts raised, by kind (one-hour-left, overdue).",
		}, []string{"kind"}),
		ordersFired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_order_alerts_total", Help: "CERT-In order due-time alerts raised, by kind (one-hour-left, overdue).",
		}, []string{"kind"}),
	}
	for _, k := range incident.AlertKinds {
		a.fired.WithLabelValues(string(k))
		a.ordersFired.WithLabelValues(string(k))
	}
	count := func(n func(context.Context) (int, error)) func() float64 {
		return func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			v, _ := n(ctx)
			return float64(v)
		}
	}
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_incidents_open", Help: "Incidents in the register that are not closed."}, count(s.db.OpenIncidents))
	openOrders := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_orders_open", Help: "CERT-In orders not yet answered."}, count(s.db.OpenOrders))
	if err := errors.Join(s.metrics.reg.Register(a.fired), s.metrics.reg.Register(a.ordersFired), s.metrics.reg.Register(open), s.metrics.reg.Register(openOrders)); err != nil {
		return nil, err
	}
	return a, nil
}

// watchIncidents raises incident and order alerts until ctx ends, checking
// every minute; webhook is the operator's URL for alerts, or "" (checkWebhook
// tells early whether it will do).
func (s *Server) watchIncidents(ctx context.Context, webhook string) {
	a, err := s.newIncidentAlerts(incident.SystemClock{}, webhook)
	if err != nil {
		s.log.Error("incident deadline alerts are off", "err", err)
		return
	}
	t := time.NewTicker(incidentCheckEvery)
	defer t.Stop()
	for {
		if err := a.check(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("checking incident deadlines", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check raises the alerts of incidents and orders that are due now.
func (a *incidentAlerts) check(ctx context.Context) error {
	now := a.clock.Now()
	return errors.Join(a.checkIncidents(ctx, now), a.checkOrders(ctx, now))
}

// checkIncidents raises the incident alerts due at now.
func (a *incidentAlerts) checkIncidents(ctx context.Context, now time.Time) error {
	incs, err := a.s.db.Incidents(ctx, false)
	if err != nil {
		return err
	}
	for _, al := range incident.Due(incs, now) {
		first, err := a.s.db.RecordIncidentAlert(ctx, al.Incident, al.Kind, now)
		if err != nil {
			return err
		}
		if !first {
			continue
		}
		a.fired.WithLabelValues(string(al.Kind)).Inc()
		a.s.log.Warn("incident report deadline", "incident", al.Incident, "type", int(al.Type), "alert", al.Kind, "time_left", al.TimeLeft, "deadline", al.Deadline)
		if a.webhook != "" {
			if err := a.post(ctx, al); err != nil {
				a.s.log.Warn("incident alert webhook failed", "incident", al.Incident, "alert", al.Kind, "err", err)
			}
		}
	}
	return nil
}

// checkOrders raises the alerts of open CERT-In orders due at now; an
// answered order raises none.
func (a *incidentAlerts) checkOrders(ctx context.Context, now time.Time) error {
	rows, err := a.s.db.Orders(ctx)
	if err != nil {
		return err
	}
	orders := make([]incident.Order, len(rows))
	for i, o := range rows {
		orders[i] = o.Order
	}
	for _, al := range incident.DueOrders(orders, now) {
		first, err := a.s.db.RecordOrderAlert(ctx, al.Order, al.Kind, now)
		if err != nil {
			return err
		}
		if !first {
			continue
		}
		a.ordersFired.WithLabelValues(string(al.Kind)).Inc()
		a.s.log.Warn("CERT-In order due", "order", al.Order, "alert", al.Kind, "time_left", al.TimeLeft, "due", al.Due)
		if a.webhook != "" {
			if err := a.post(ctx, al); err != nil {
				a.s.log.Warn("order alert webhook failed", "order", al.Order, "alert", al.Kind, "err", err)
			}
		}
	}
	return nil
}

// post sends al (an incident.Alert or incident.OrderAlert) to the webhook
// as JSON. Its errors leave out the URL, which may hold a secret.
func (a *incidentAlerts) post(ctx context.Context, al any) error {
	body, err := json.Marshal(al)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", a.webhook, strings.NewReader(string(body)))
	if err != nil {
		return errors.New("malformed webhook URL")
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered HTTP %d", resp.StatusCode)
	}
	return nil
}
