package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ictlog"
)

// Nothing lost on the way to the ledger. A session record the control
// server refuses as wrong is counted, logged (its id, never its content)
// and raised as an incident candidate here, not only on the gateway that
// sets it aside. Gateways report what they hold undelivered (spooled, and
// set aside by reason: counts and ids) with their load; the operator
// lists it (GET /gateways/{name}/records) and, once the cause is fixed,
// has the gateway send its set-aside records again (POST
// /gateways/{name}/records/resend), an instruction carried by the reply
// to the gateway's next report. The reply also carries the retention of
// session records, past which the gateway deletes set-aside records.

const kindRecordsNotStored = "records-not-stored" // a gateway's session records were refused: type 2

// maxRefusedIDs bounds the ids remembered to count each refused record
// once (a refused batch is sent again one record at a time).
const maxRefusedIDs = 100_000

// heldRecords is the control server's state about undelivered records.
type heldRecords struct {
	mu      sync.Mutex
	resend  map[string][]string // by gateway: reasons to send again at its next report
	discard map[string]bool     // by gateway: delete its no-duty records at its next report
	seen    map[string]struct{} // gateway and id of records counted as refused
	refused prometheus.Counter
}

func (h *heldRecords) setUp(reg *prometheus.Registry) {
	h.refused = prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_session_records_refused_total",
		Help: "Session records received from gateways and refused as wrong (as ending before their start): not stored. The gateway sets them aside ('meridian gateway records')."})
	reg.MustRegister(h.refused)
}

// recordRefused counts, logs and raises the refusal of record id from
// gateway gw (reason is a fixed code, never the record's content).
func (s *Server) recordRefused(ctx context.Context, gw, id, reason string) {
	h := &s.held
	h.mu.Lock()
	if h.seen == nil || len(h.seen) >= maxRefusedIDs {
		h.seen = map[string]struct{}{}
	}
	key := gw + "/" + id
	_, again := h.seen[key]
	h.seen[key] = struct{}{}
	h.mu.Unlock()
	if !again {
		h.refused.Inc()
	}
	s.log.Error("a session record could not be stored: refused as wrong; the gateway sets it aside ('meridian gateway records')", "gateway", gw, "id", id, "reason", reason)
	s.raiseCandidate(ctx, api.IncidentCandidate{Kind: kindRecordsNotStored, Node: gw, Types: []int{int(typeCompromise)}, DetectedAt: time.Now(),
		Summary: fmt.Sprintf("Records could not be stored: gateway %s sent session records the control server refused as wrong (%s), so a duty's records may be missing from the ledger. "+
			"The gateway keeps them set aside: list them with 'meridian gateway records --gateway %s', fix the cause, then 'meridian gateway records resend --gateway %s'.", gw, reason, gw, gw),
		Details: ictlog.Details("gateway", gw, "reason", reason)})
}

// reportReply is the answer to gateway gw's report: the reasons to resend
// (handed over once) and the retention of set-aside records.
func (s *Server) reportReply(ctx context.Context, gw string) api.GatewayReportReply {
	var out api.GatewayReportReply
	s.held.mu.Lock()
	out.Resend = s.held.resend[gw]
	delete(s.held.resend, gw)
	if s.held.discard[gw] {
		out.Discard = []string{api.SetAsideNoDuty}
		delete(s.held.discard, gw)
	}
	s.held.mu.Unlock()
	years, err := s.retentionYears(ctx)
	if err != nil {
		s.log.Warn("reading the retention for a gateway's set-aside records", "err", err)
		return out
	}
	out.PurgeSetAsideBefore = time.Now().AddDate(-years, 0, 0).UTC()
	return out
}

// gatewayRecords is what gateway name last reported it holds.
func (s *Server) gatewayRecords(ctx context.Context, name string) (api.GatewayRecords, error) {
	gws, err := s.db.Gateways(ctx)
	if err != nil {
		return api.GatewayRecords{}, err
	}
	if !slices.ContainsFunc(gws, func(g api.Gateway) bool { return g.Name == name }) {
		return api.GatewayRecords{}, errGatewayUnknown
	}
	out := api.GatewayRecords{Gateway: name, SetAside: []api.SetAsideGroup{}}
	s.mu.Lock()
	st, ok := s.status[name]
	s.mu.Unlock()
	if ok && st.report.Records != nil {
		out.ReportedAt = st.lastSeen.UTC()
		out.Spooled = st.report.Records.Spooled
		out.SetAside = append(out.SetAside, st.report.Records.SetAside...)
	}
	s.held.mu.Lock()
	out.ResendPending = slices.Clone(s.held.resend[name])
	if s.held.discard[name] {
		out.DiscardPending = []string{api.SetAsideNoDuty}
	}
	s.held.mu.Unlock()
	return out, nil
}

// loggableID is a record's id for a log, if it has the form of one (32
// lower-case hex digits): an invalid record's id field may hold anything.
func loggableID(id string) string {
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "(invalid id)"
	}
	return id
}

// firstSealed is the id of the first record still sealed: the one
// openSealedEndpoints failed on (they are opened in order).
func firstSealed(recs []api.SessionRecord) string {
	for _, r := range recs {
		if r.SealedEndpoint != "" {
			return r.ID
		}
	}
	return ""
}

var errGatewayUnknown = errors.New("no such gateway")

// answerGatewayRecords answers with what gateway name holds; false (and
// the answer sent) if it cannot.
func (s *Server) answerGatewayRecords(w http.ResponseWriter, r *http.Request, name string, write bool) bool {
	out, err := s.gatewayRecords(r.Context(), name)
	switch {
	case errors.Is(err, errGatewayUnknown):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no gateway named %q", name))
		return false
	case err != nil:
		s.fail(w, r, err)
		return false
	}
	if write {
		writeJSON(w, http.StatusOK, out)
	}
	return true
}

func (s *Server) handleGatewayRecords(w http.ResponseWriter, r *http.Request) {
	s.answerGatewayRecords(w, r, r.PathValue("name"), true)
}

func (s *Server) handleResendGatewayRecords(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.ResendRequest
	if !decode(w, r, &req) {
		return
	}
	reasons := req.Reasons
	if len(reasons) == 0 {
		reasons = []string{api.SetAsideRefused, api.SetAsideNoDuty}
	}
	for _, x := range reasons {
		if x != api.SetAsideRefused && x != api.SetAsideNoDuty {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("reason %q: want %s or %s", x, api.SetAsideRefused, api.SetAsideNoDuty))
			return
		}
	}
	if !s.answerGatewayRecords(w, r, name, false) {
		return
	}
	s.held.mu.Lock()
	if s.held.resend == nil {
		s.held.resend = map[string][]string{}
	}
	for _, x := range reasons {
		if !slices.Contains(s.held.resend[name], x) {
			s.held.resend[name] = append(s.held.resend[name], x)
		}
	}
	s.held.mu.Unlock()
	s.ict.record(api.ControlNode, api.ICTLogEntry{At: time.Now(), Category: ictlog.Gateway, Event: "set-aside session records to be sent again", Outcome: ictlog.Success,
		Actor: who(principalOf(r.Context())), Details: ictlog.Details("gateway", name, "reasons", reasons)}, 0)
	s.answerGatewayRecords(w, r, name, true)
}

// handleDiscardGatewayRecords has gateway name delete, at its next
// report, the records it set aside because no duty required them: the
// operator's answer to "no duty, no data" once the place is right. Records
// refused as wrong are never discarded: a duty required them.
func (s *Server) handleDiscardGatewayRecords(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.answerGatewayRecords(w, r, name, false) {
		return
	}
	s.held.mu.Lock()
	if s.held.discard == nil {
		s.held.discard = map[string]bool{}
	}
	s.held.discard[name] = true
	s.held.mu.Unlock()
	s.ict.record(api.ControlNode, api.ICTLogEntry{At: time.Now(), Category: ictlog.Gateway, Event: "set-aside session records no duty requires to be deleted", Outcome: ictlog.Success,
		Actor: who(principalOf(r.Context())), Details: ictlog.Details("gateway", name)}, 0)
	s.answerGatewayRecords(w, r, name, true)
}
