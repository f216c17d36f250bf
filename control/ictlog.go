package control

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ictlog"
	"github.com/meridian-vpn/meridian/incident"
	"github.com/meridian-vpn/meridian/jurisdiction"
)

// The ICT log (CERT-In direction (iv)). An event is recorded only while the
// node it happens on carries an ICT-log duty by its place
// (jurisdiction.NodeDuties): the control server's own events
// (authentication, admin requests, configuration changes, gateway joins)
// when the control server does, a gateway's (handshake rate-limiting,
// egress-policy denials) when that gateway does. With no such node,
// nothing is recorded. Entries name tokens and gateways, never people or
// addresses: a failed login is logged without its source address.

// ictState is the ICT log, the duties it follows, and the detectors that
// watch the same events for incident candidates (candidates.go).
type ictState struct {
	log      *ictlog.Log
	location string // where the operator keeps the logs (Config.ICTLogLocation)

	mu       sync.Mutex
	duties   []api.ICTLogDuty               // nodes carrying the duty, in name order
	country  map[string]string              // every placed node's physical country
	counters map[string]api.GatewayCounters // each gateway's last reported counters
	heard    map[string]time.Time           // when each gateway's credential was last accepted
	failures []time.Time                    // recent failed admin logins
}

// openICT checks where the operator keeps the ICT log, and reads the
// duties.
func (s *Server) openICT(ctx context.Context) error {
	now := s.cfg.ictNow
	if now == nil {
		now = time.Now
	}
	s.ict = &ictState{log: ictlog.New(s.db, now), counters: map[string]api.GatewayCounters{}, heard: map[string]time.Time{}}
	if s.cfg.ICTLogLocation != "" {
		c, err := jurisdiction.ParseCountry(s.cfg.ICTLogLocation)
		if err != nil {
			return fmt.Errorf("ICT log location: %v", err)
		}
		s.ict.location = string(c)
	}
	return s.refreshICTDuties(ctx)
}

// refreshICTDuties reads again which nodes carry an ICT-log duty. It runs
// at start and after every change an admin makes, which is where places,
// jurisdictions and profiles change.
func (s *Server) refreshICTDuties(ctx context.Context) error {
	places, err := s.db.Places(ctx)
	if err != nil {
		return err
	}
	country := make(map[string]string, len(places))
	for n, p := range places {
		country[n] = p.PhysicalCountry
	}
	var duties []api.ICTLogDuty
	err = s.eachNodeDuty(ctx, jurisdiction.ICTLogs, func(node string, d jurisdiction.Duty) {
		duties = append(duties, api.ICTLogDuty{Node: node, Country: country[node], KeepDays: d.RetentionDays, Why: d.Why})
	})
	if err != nil {
		return err
	}
	s.ict.mu.Lock()
	s.ict.duties, s.ict.country = duties, country
	s.ict.mu.Unlock()
	return nil
}

// ictDuty returns the retention of node's ICT-log duty (0: none) and the
// node's physical country.
func (st *ictState) ictDuty(node string) (keepDays int, country string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, d := range st.duties {
		if d.Node == node {
			return d.KeepDays, d.Country
		}
	}
	return 0, st.country[node]
}

// longest is the longest retention of any node's duty now, 0 for none.
func (st *ictState) longest() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, d := range st.duties {
		n = max(n, d.KeepDays)
	}
	return n
}

// record adds e to the ICT log as an event of node, if node carries the
// duty; minKeep, if larger, is the node's retention before a change that
// may have ended its duty.
func (st *ictState) record(node string, e api.ICTLogEntry, minKeep int) {
	keep, country := st.ictDuty(node)
	if keep = max(keep, minKeep); keep == 0 {
		return
	}
	e.Node, e.Country, e.KeepDays = node, country, keep
	st.log.Add(e)
}

// configRoutes are the admin routes (below api.Prefix) whose changes are
// configuration; other changes are logged as admin actions.
var configRoutes = []string{"/gateways/{name}/place", "/control/place", "/locations", "/jurisdictions", "/profiles", "/gateway-tokens", "/compliance/rotate-key", "/poc"}

// routeValues are the path wildcards an admin entry may carry: ids, codes
// and names of things. A user's name (which may be an email address) never
// goes into the log.
func routeValues(r *http.Request, route string) map[string]string {
	out := map[string]string{}
	for _, seg := range strings.Split(route, "/") {
		name, ok := strings.CutPrefix(seg, "{")
		if !ok {
			continue
		}
		name = strings.TrimSuffix(name, "}")
		if name == "id" || name == "country" || name == "code" ||
			name == "name" && (strings.HasPrefix(route, "/gateways/") || strings.HasPrefix(route, "/profiles/")) {
			out[name] = r.PathValue(name)
		}
	}
	return out
}

// credentialKind says what a bearer token claims to be, without saying
// anything of the token itself.
func credentialKind(tok string) string {
	switch {
	case tok == "":
		return "none"
	case strings.HasPrefix(tok, adminTokenPrefix):
		return "admin token"
	case strings.HasPrefix(tok, gatewayCredPrefix):
		return "gateway credential"
	}
	return "unrecognised"
}

// routeOf is the matched route of r without the API prefix: "PUT
// /gateways/{name}/place".
func routeOf(r *http.Request) string {
	method, path, _ := strings.Cut(r.Pattern, " ")
	return method + " " + strings.TrimPrefix(path, api.Prefix)
}

// ictAuthFailed records a refused request: no token, an unknown one, or a
// credential whose role may not call the endpoint (p is then who it was).
// Failed admin logins also feed the burst detector.
func (s *Server) ictAuthFailed(r *http.Request, want role, p principal, why string) {
	now := time.Now()
	tok := bearer(r)
	s.ict.record(api.ControlNode, api.ICTLogEntry{At: now, Category: ictlog.Auth, Event: why, Outcome: ictlog.Failure, Actor: who(p),
		Details: ictlog.Details("route", routeOf(r), "credential", credentialKind(tok))}, 0)
	if want != asGateway && tok != "" && p.admin == nil && p.gateway == nil {
		s.noteFailedLogin(r.Context(), now)
	}
}

// ictAccepted records an accepted credential. A gateway's is recorded when
// it is first heard from since the control server started or after
// falling silent, not on every report. An admin request is recorded when
// it ends, with its route and status (never its body), by the function
// ictAccepted returns, which the caller defers.
func (s *Server) ictAccepted(w http.ResponseWriter, r *http.Request, p principal) (http.ResponseWriter, func()) {
	now := time.Now()
	if p.gateway != nil {
		s.ict.mu.Lock()
		last := s.ict.heard[p.gateway.Name]
		s.ict.heard[p.gateway.Name] = now
		s.ict.mu.Unlock()
		if last.IsZero() || now.Sub(last) > s.cfg.HeartbeatTimeout {
			s.ict.record(api.ControlNode, api.ICTLogEntry{At: now, Category: ictlog.Auth, Event: "gateway credential accepted", Outcome: ictlog.Success,
				Actor: who(p), Details: ictlog.Details("route", routeOf(r), "after", "start or silence")}, 0)
		}
		return w, func() {}
	}
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	return rec, func() {
		rt := routeOf(r)
		method, path, _ := strings.Cut(rt, " ")
		keep, _ := s.ict.ictDuty(api.ControlNode) // before the request changed it
		category := ictlog.Admin
		if method != "GET" {
			// Even a failed write may have changed something before it
			// failed: caches of the configuration start again.
			s.adminWrites.Add(1)
		}
		if method != "GET" && rec.code < 300 {
			if slices.ContainsFunc(configRoutes, func(p string) bool { return strings.HasPrefix(path, p) }) {
				category = ictlog.Config
			}
			// Duties follow places, jurisdictions, profiles and the
			// fleet's nodes; reading them after every write (a user, a
			// device) cost more than the write.
			if category == ictlog.Config || strings.HasPrefix(path, "/gateways") {
				if err := s.refreshICTDuties(r.Context()); err != nil {
					s.log.Warn("reading ICT-log duties", "err", err)
				}
			}
		}
		outcome := ictlog.Success
		if rec.code >= 400 {
			outcome = ictlog.Failure
		}
		s.ict.record(api.ControlNode, api.ICTLogEntry{At: now, Category: ictlog.Auth, Event: "admin token accepted", Outcome: ictlog.Success, Actor: who(p),
			Details: ictlog.Details("route", rt, "role", p.admin.Role)}, keep)
		details := []any{"status", rec.code}
		if v := routeValues(r, path); len(v) > 0 {
			details = append(details, "values", v)
		}
		s.ict.record(api.ControlNode, api.ICTLogEntry{At: now, Category: category, Event: rt, Outcome: outcome, Actor: who(p), Details: ictlog.Details(details...)}, keep)
	}
}

// who names a credential's holder in the ICT log: an admin token's id and
// name, or a gateway's name.
func who(p principal) string {
	switch {
	case p.admin != nil:
		return "admin:" + p.admin.ID + " (" + p.admin.Name + ")"
	case p.gateway != nil:
		return "gateway:" + p.gateway.Name
	}
	return ""
}

// ictGatewayJoined records a gateway's join, or a refused join token.
func (s *Server) ictGatewayJoined(r *http.Request, name string, mode api.GatewayMode, err error) {
	e := api.ICTLogEntry{Category: ictlog.Gateway, Event: "gateway joined", Outcome: ictlog.Success, Actor: "gateway:" + name,
		Details: ictlog.Details("gateway", name, "mode", mode)}
	if err != nil {
		e.Category, e.Event, e.Outcome, e.Actor = ictlog.Auth, "join refused", ictlog.Failure, ""
		e.Details = ictlog.Details("route", routeOf(r), "credential", "join token", "why", err.Error())
	}
	s.ict.record(api.ControlNode, e, 0)
}

// ictGatewayReport turns increases of a gateway's counters into ICT log
// events of that gateway, and handshake rate-limiting into a DoS candidate.
// The first report after the control server starts sets the baseline; a
// counter that went down means the gateway restarted.
func (s *Server) ictGatewayReport(ctx context.Context, name string, rep *api.GatewayReport) {
	if rep.Counters == nil {
		return
	}
	cur := *rep.Counters
	s.ict.mu.Lock()
	prev, seen := s.ict.counters[name]
	s.ict.counters[name] = cur
	s.ict.mu.Unlock()
	if !seen {
		return
	}
	grew := func(was, is uint64) uint64 {
		if is < was {
			return is
		}
		return is - was
	}
	now := time.Now()
	if n := grew(prev.EgressDenied, cur.EgressDenied); n > 0 {
		s.ict.record(name, api.ICTLogEntry{At: now, Category: ictlog.Egress, Event: "egress policy denied flows", Outcome: ictlog.Info,
			Actor: "gateway:" + name, Details: ictlog.Details("flows", n, "total", cur.EgressDenied)}, 0)
	}
	if n := grew(prev.UnderLoad, cur.UnderLoad); n > 0 {
		s.ict.record(name, api.ICTLogEntry{At: now, Category: ictlog.Handshake, Event: "handshake rate-limiting (cookie mode) entered", Outcome: ictlog.Info,
			Actor: "gateway:" + name, Details: ictlog.Details("times", n, "total", cur.UnderLoad)}, 0)
		s.raiseCandidate(ctx, api.IncidentCandidate{Kind: kindHandshakeFlood, Node: name, Types: []int{int(typeDoS)}, DetectedAt: now,
			Summary: fmt.Sprintf("Gateway %s went into WireGuard handshake rate-limiting (cookie mode) %s: handshake initiations arrived faster than it could process them, as in a handshake flood.", name, howOften(n)),
			Details: ictlog.Details("gateway", name, "times", n)})
	}
}

func howOften(n uint64) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

// watchICT keeps the ICT log until ctx ends: it writes queued events every
// second, purges entries past their retention daily, and verifies the
// ledger hourly for the incident detector (candidates.go).
func (s *Server) watchICT(ctx context.Context) {
	s.ict.record(api.ControlNode, api.ICTLogEntry{Category: ictlog.System, Event: "control server started", Outcome: ictlog.Info,
		Details: ictlog.Details("version", Version, "ict_log_location", s.ict.location, "signup", s.cfg.Signup, "collect_all", s.cfg.CollectAll,
			"two_person_exports", s.cfg.TwoPersonRule, "mail", s.cfg.Mail != nil, "trusted_proxies", len(s.cfg.TrustedProxies))}, 0)
	flush := time.NewTicker(time.Second)
	defer flush.Stop()
	verify := time.NewTicker(ledgerVerifyEvery)
	defer verify.Stop()
	purge := time.NewTicker(24 * time.Hour)
	defer purge.Stop()
	s.purgeICT(ctx)
	s.checkLedger(ctx)
	for {
		select {
		case <-ctx.Done():
			return // Close writes what is left
		case <-flush.C:
			if err := s.ict.log.Flush(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("writing the ICT log", "err", err)
			}
		case <-purge.C:
			s.purgeICT(ctx)
		case <-verify.C:
			s.checkLedger(ctx)
		}
	}
}

// purgeICT removes ICT log entries whose retention has ended.
func (s *Server) purgeICT(ctx context.Context) {
	n, err := s.ict.log.Purge(ctx, s.ict.longest())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("purging the ICT log", "err", err)
		}
		return
	}
	if n > 0 {
		s.log.Info("ICT log entries past their retention purged", "entries", n)
		s.ict.record(api.ControlNode, api.ICTLogEntry{Category: ictlog.System, Event: "entries past their retention purged", Outcome: ictlog.Info,
			Details: ictlog.Details("entries", n)}, 0)
	}
}

// parseRange reads the from and to parameters of an export: RFC 3339
// times with a zone, from before to.
func parseRange(r *http.Request) (from, to time.Time, err error) {
	q := r.URL.Query()
	if from, err = incident.ParseTime("from", q.Get("from")); err != nil {
		return
	}
	if to, err = incident.ParseTime("to", q.Get("to")); err != nil {
		return
	}
	return from, to, ictlog.CheckRange(from, to)
}

// handleICTLogs exports the entries of [from, to) as JSON lines; the
// SHA-256 of the body follows in a trailer and in the ICT log itself.
func (s *Server) handleICTLogs(w http.ResponseWriter, r *http.Request) {
	from, to, err := parseRange(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.ict.log.Flush(r.Context()); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Trailer", api.ExportHeader)
	n, sum, err := s.ict.log.Export(r.Context(), from, to, w)
	if err != nil {
		// The body is cut short and has no trailer: the client sees that.
		s.log.Warn("ICT log export failed", "err", err)
		return
	}
	w.Header().Set(api.ExportHeader, sum)
	s.ict.record(api.ControlNode, api.ICTLogEntry{Category: ictlog.Admin, Event: "ICT log exported", Outcome: ictlog.Success, Actor: actor(r.Context()),
		Details: ictlog.Details("from", from.Format(time.RFC3339Nano), "to", to.Format(time.RFC3339Nano), "entries", n, "sha256", sum)}, 0)
}

func (s *Server) handleICTLogStatus(w http.ResponseWriter, r *http.Request) {
	if err := s.refreshICTDuties(r.Context()); err != nil {
		s.fail(w, r, err)
		return
	}
	st := api.ICTLogStatus{Location: s.ict.location, Duties: []api.ICTLogDuty{}}
	if st.Location != "" {
		st.LocationName = jurisdiction.Country(st.Location).Name()
	}
	s.ict.mu.Lock()
	st.ControlCountry = s.ict.country[api.ControlNode]
	st.Duties = append(st.Duties, s.ict.duties...)
	s.ict.mu.Unlock()
	st.KeepDays = s.ict.longest()
	var err error
	if st.Entries, st.Oldest, st.Newest, st.Dropped, err = s.ict.log.Stats(r.Context()); err != nil {
		s.fail(w, r, err)
		return
	}
	st.Notes = ictNotes(st)
	writeJSON(w, http.StatusOK, st)
}

// ictNotes says what an operator should know of where the log is kept and
// what is recorded.
func ictNotes(st api.ICTLogStatus) []string {
	var notes []string
	if len(st.Duties) == 0 {
		notes = append(notes, "no node stands where an ICT-log duty applies: nothing is recorded")
	} else if !slices.ContainsFunc(st.Duties, func(d api.ICTLogDuty) bool { return d.Node == api.ControlNode }) {
		notes = append(notes, "the control server carries no ICT-log duty where it stands, so its own events (logins, admin actions, configuration) are not recorded; only those of the gateways listed")
	}
	switch {
	case st.Location == "":
		notes = append(notes, "where the logs are kept is not configured: start the control server with --ict-log-location COUNTRY")
	case st.ControlCountry != "" && st.ControlCountry != st.Location:
		notes = append(notes, fmt.Sprintf("the logs are in the control server's database, and the control server is placed in %s, not %s as --ict-log-location says", st.ControlCountry, st.Location))
	}
	if st.Location != "" {
		for _, d := range st.Duties {
			if d.Country != st.Location {
				notes = append(notes, fmt.Sprintf("the duty of %s comes from %s (%s) and the logs are kept in %s: check that the duty allows keeping them there", d.Node, d.Country, d.Why, st.Location))
			}
		}
	}
	return notes
}
