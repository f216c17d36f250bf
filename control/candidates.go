package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ictlog"
	"github.com/meridian-vpn/meridian/incident"
	"github.com/meridian-vpn/meridian/jurisdiction"
	"github.com/meridian-vpn/meridian/store"
)

// Incident candidates: what the platform sees that may be an incident of
// Annexure I. A detector raises a candidate; an operator confirms it (the
// incident enters the register, noticed at the time of detection, so the
// reporting deadline counts from then) or dismisses it with a reason.
// While a candidate is pending, further sightings of the same kind on the
// same node are added to it rather than raising new ones.
const (
	kindHandshakeFlood = "handshake-flood"      // a gateway went into handshake rate-limiting: type 8
	kindLedgerVerify   = "ledger-verify-failed" // the hourly ledger verification failed: types 2 and 11
	kindLoginBurst     = "admin-login-failures" // a burst of failed admin logins: type 3
)

// The Annexure I types the detectors name.
const (
	typeCompromise         incident.Type = 2  // compromise of critical systems/information
	typeUnauthorisedAccess incident.Type = 3  // unauthorised access of IT systems/data
	typeDoS                incident.Type = 8  // denial of service
	typeDataBreach         incident.Type = 11 // data breach
)

// Detector settings.
const (
	ledgerVerifyEvery = time.Hour
	loginBurst        = 20              // failed admin logins ...
	loginBurstWithin  = 5 * time.Minute // ... within this time raise a candidate
)

// raiseCandidate records c with the control node's sync state, logging
// (without personal data) when it is new. A caller that hangs up does not
// stop it.
func (s *Server) raiseCandidate(ctx context.Context, c api.IncidentCandidate) {
	c.DetectedAt, c.Clock = c.DetectedAt.UTC().Truncate(time.Second), s.clockNow()
	got, fresh, err := s.db.RaiseCandidate(context.WithoutCancel(ctx), c)
	if err != nil {
		s.log.Error("an incident candidate was not recorded", "kind", c.Kind, "node", c.Node, "err", err)
		return
	}
	if fresh {
		s.log.Warn("incident candidate: confirm or dismiss it ('meridian incident candidates')", "candidate", got.ID, "kind", got.Kind, "node", got.Node, "types", got.Types)
	}
}

// noteFailedLogin counts a failed admin login; loginBurst of them within
// loginBurstWithin raise a candidate of type 3 (unauthorised access).
func (s *Server) noteFailedLogin(ctx context.Context, at time.Time) {
	st := s.ict
	st.mu.Lock()
	kept := st.failures[:0]
	for _, t := range st.failures {
		if at.Sub(t) < loginBurstWithin {
			kept = append(kept, t)
		}
	}
	st.failures = append(kept, at)
	n, first := len(st.failures), st.failures[0]
	if n >= loginBurst {
		st.failures = nil
	}
	st.mu.Unlock()
	if n < loginBurst {
		return
	}
	s.raiseCandidate(ctx, api.IncidentCandidate{Kind: kindLoginBurst, Node: api.ControlNode, Types: []int{int(typeUnauthorisedAccess)}, DetectedAt: at,
		Summary: fmt.Sprintf("%d requests with invalid or revoked admin tokens reached the control server's API within %s from %s: someone may be guessing tokens or using a stolen, revoked one.",
			n, max(time.Second, at.Sub(first).Round(time.Second)), first.UTC().Format(time.RFC3339)),
		Details: ictlog.Details("failures", n, "first", first.UTC().Format(time.RFC3339Nano), "last", at.UTC().Format(time.RFC3339Nano))})
}

// checkLedger verifies the ledger; problems raise a candidate of types 2
// (compromise of critical systems/information) and 11 (data breach): the
// compliance records were changed outside Meridian. Whoever confirms it
// says which it is.
func (s *Server) checkLedger(ctx context.Context) {
	rep, err := s.ledger.Verify(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("verifying the ledger", "err", err)
		}
		return
	}
	if rep.OK() {
		return
	}
	n := len(rep.Problems) + rep.Omitted
	now := time.Now()
	s.ict.record(api.ControlNode, api.ICTLogEntry{At: now, Category: ictlog.Integrity, Event: "ledger verification failed", Outcome: ictlog.Failure,
		Details: ictlog.Details("problems", n, "first", rep.Problems[0].String())}, 0)
	s.raiseCandidate(ctx, api.IncidentCandidate{Kind: kindLedgerVerify, Node: api.ControlNode, Types: []int{int(typeCompromise), int(typeDataBreach)}, DetectedAt: now,
		Summary: fmt.Sprintf("Verifying the compliance ledger found %s: its records were changed, removed or reordered outside Meridian. First: %s. Run 'meridian compliance verify' for all.",
			howMany(n, "problem"), rep.Problems[0]),
		Details: ictlog.Details("problems", n, "first", rep.Problems[0].String())})
}

func howMany(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func (s *Server) handleCandidates(w http.ResponseWriter, r *http.Request) {
	all := false
	if v := r.URL.Query().Get("all"); v != "" {
		var err error
		if all, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, "all must be true or false")
			return
		}
	}
	cs, err := s.db.Candidates(r.Context(), all)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cs)
}

// pendingCandidate reads candidate id for a decision, answering the
// caller itself when it cannot be decided.
func (s *Server) pendingCandidate(w http.ResponseWriter, r *http.Request) (api.IncidentCandidate, bool) {
	id, ok := pathID(w, r, "candidate")
	if !ok {
		return api.IncidentCandidate{}, false
	}
	c, err := s.db.Candidate(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no incident candidate %d", id))
		return c, false
	}
	if c.State != api.CandidatePending {
		msg := fmt.Sprintf("incident candidate %d was already %s", id, c.State)
		if c.Incident != 0 {
			msg += fmt.Sprintf(" as incident %d", c.Incident)
		}
		writeError(w, http.StatusConflict, msg)
		return c, false
	}
	return c, true
}

// handleConfirmCandidate adds the incident a candidate describes to the
// register, noticed when the candidate was first detected: its clock at
// notice is the candidate's, and its clock at confirmation is taken now.
func (s *Server) handleConfirmCandidate(w http.ResponseWriter, r *http.Request) {
	var req api.CandidateConfirm
	if !decode(w, r, &req) {
		return
	}
	c, ok := s.pendingCandidate(w, r)
	if !ok {
		return
	}
	typ, err := incident.ParseType(c.Types[0])
	if req.Type != 0 {
		typ, err = incident.ParseType(req.Type)
	}
	if err == nil {
		err = incident.CheckText("note", &req.Note, incident.MaxLong)
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
	now := time.Now().UTC().Truncate(time.Second)
	fields := incident.Fields{
		Occurred:        c.DetectedAt.Format(time.RFC3339),
		Description:     c.Summary,
		HowDetected:     fmt.Sprintf("Meridian's %s detector, first at %s, %s until %s (incident candidate %d)", c.Kind, c.DetectedAt.Format(time.RFC3339), howMany(c.Sightings, "sighting"), c.LastSeenAt.Format(time.RFC3339), c.ID),
		AffectedSystems: []incident.AffectedSystem{{HostName: c.Node}},
	}
	if country := s.placeOf(r.Context(), c.Node); country != "" {
		fields.PhysicalLocation = fmt.Sprintf("%s (%s)", jurisdiction.Country(country).Name(), country)
	}
	note := req.Note
	if note == "" {
		note = fmt.Sprintf("confirmed from incident candidate %d", c.ID)
	}
	by := actor(r.Context())
	inc := incident.Incident{Type: typ, State: incident.Noticed, Noticed: c.DetectedAt, Deadline: incident.Deadline(c.DetectedAt, duty.within),
		DeadlineWhy: duty.why, Recipient: duty.recipient, Version: 1, NoticeClock: c.Clock, ConfirmClock: s.clockNow()}
	u := incident.Update{Version: 1, At: now, By: by, Type: typ, Fields: fields, Note: note}
	inc.ID, err = s.db.CreateIncident(r.Context(), inc, func(tx *store.Tx, id int64) error {
		if err := s.addIncidentVersion(r.Context(), tx, id, u); err != nil {
			return err
		}
		return tx.DecideCandidate(r.Context(), c.ID, api.CandidateConfirmed, now, by, "", id)
	})
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no incident candidate %d", c.ID))
		return
	}
	s.log.Info("incident recorded from a candidate", "incident", inc.ID, "candidate", c.ID, "type", int(typ), "deadline", inc.Deadline)
	writeJSON(w, http.StatusCreated, inc.AsOf(time.Now()))
}

// placeOf is node's physical country, or "" when it has no place.
func (s *Server) placeOf(ctx context.Context, node string) string {
	p, err := s.db.Place(ctx, node)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("reading a node's place", "node", node, "err", err)
		}
		return ""
	}
	return p.PhysicalCountry
}

func (s *Server) handleDismissCandidate(w http.ResponseWriter, r *http.Request) {
	var req api.CandidateDismiss
	if !decode(w, r, &req) {
		return
	}
	if err := incident.CheckText("reason", &req.Reason, incident.MaxLong); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Reason == "" {
		writeError(w, http.StatusBadRequest, "reason is required: why this is not an incident (it is kept with the candidate)")
		return
	}
	c, ok := s.pendingCandidate(w, r)
	if !ok {
		return
	}
	err := s.db.Update(r.Context(), func(tx *store.Tx) error {
		return tx.DecideCandidate(r.Context(), c.ID, api.CandidateDismissed, time.Now(), actor(r.Context()), req.Reason, 0)
	})
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no incident candidate %d", c.ID))
		return
	}
	if c, err = s.db.Candidate(r.Context(), c.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}
