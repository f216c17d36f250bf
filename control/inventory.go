package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ictlog"
	"github.com/meridian-vpn/meridian/jurisdiction"
	"github.com/meridian-vpn/meridian/store"
)

// The data inventory: every category of personal data the installation
// can hold, the duty (or operator's choice) that requires it, where it
// lies, how much, the oldest, the retention rule and what is past it.

// Categories gateways hold and report (api.GatewayHeldRecords).
const (
	holdGatewaySpooled  = "gateway-spooled-records"
	holdGatewaySetAside = "gateway-set-aside-records"
)

const kindRetentionOverdue = "retention-overdue" // personal data kept past its retention: type 11

// inventoryCategory is a line of the inventory: adding a category is a
// line here (and its count, in store.Holdings or a gateway's report).
type inventoryCategory struct {
	name, what, where string
	duty              jurisdiction.DutyKind
	collectAll        bool   // --collect-all requires it too
	retention         string // %d: the retention in years of subscriber and session records
}

var inventoryCategories = []inventoryCategory{
	{store.HoldSubscriberRecords, "subscriber records and their validations", "meridian.db: ledger_entries (records chain, sealed), indexed by subscriber_entries", jurisdiction.SubscriberRecords, true, "%d years after the account is cancelled"},
	{store.HoldEmailCodes, "email validation codes (hashed) of subscriber records", "meridian.db: email_codes", jurisdiction.SubscriberRecords, true, "until the code expires"},
	{store.HoldPendingSignups, "self-service sign-ups not yet confirmed", "meridian.db: users (unconfirmed), their records in ledger_entries", jurisdiction.SubscriberRecords, true, "the sign-up expiry, then withdrawn and purged"},
	{store.HoldSessionRecords, "session records (attribution: tunnel and exit addresses, ports, connecting address, times)", "meridian.db: ledger_entries (records chain, sealed); meridian-sessions.db: sessions", jurisdiction.SessionRecords, false, "%d years after the account is cancelled; of a device deleted before its records arrived, after the session's end"},
	{store.HoldEndpointIndex, "blind index of connecting addresses (HMAC), for lookups by endpoint", "meridian-sessions.db: sessions.endpoint_index", jurisdiction.SessionRecords, false, "with the session record"},
	{holdGatewaySpooled, "session records waiting on gateways for delivery (connecting address sealed)", "each gateway's state directory: sessions.spool", jurisdiction.SessionRecords, false, "until delivered"},
	{holdGatewaySetAside, "session records gateways set aside (refused, or no duty when they arrived)", "each gateway's state directory: sessions.refused", jurisdiction.SessionRecords, false, "until resent, or %d years after the session"},
	{store.HoldICTLog, "ICT log entries (events naming gateways, operators and outcomes)", "meridian.db: ict_log", jurisdiction.ICTLogs, false, "the ICT-log duty's days, rolling"},
	{store.HoldIncidentReports, "incident report versions (sealed), which may name suspected source addresses", "meridian.db: ledger_entries (records chain, sealed), indexed by incident_versions", jurisdiction.IncidentReporting, false, "kept: the register of reported incidents is never deleted"},
	{store.HoldExports, "lawful export requests (the sealed query names a person)", "meridian.db: exports", jurisdiction.SessionRecords, true, "kept as the audit of the request"},
}

// inventoryDuties returns, by duty kind, the citations of every node
// where that duty applies (as 'jurisdiction explain' gives them).
func (s *Server) inventoryDuties(ctx context.Context) (map[jurisdiction.DutyKind][]string, error) {
	f, err := s.loadFleet(ctx)
	if err != nil {
		return nil, err
	}
	out := map[jurisdiction.DutyKind][]string{}
	add := func(node string, place *api.Place) error {
		if place == nil {
			return nil
		}
		duties, err := f.nodeDuties(node, place) // every reading: placement, establishment, the locations it serves
		if err != nil {
			return err
		}
		for _, d := range duties {
			out[d.Kind] = append(out[d.Kind], fmt.Sprintf("%s %s: %s", map[bool]string{true: "control", false: "gateway"}[node == api.ControlNode], node, d.Why))
		}
		return nil
	}
	p, err := s.db.Place(ctx, api.ControlNode)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err := add(api.ControlNode, p); err != nil {
		return nil, err
	}
	for _, g := range f.gateways {
		if g.InService {
			if err := add(g.Name, g.Place); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// inventory builds the data inventory at now.
func (s *Server) inventory(ctx context.Context, now time.Time) (api.Inventory, error) {
	duties, err := s.inventoryDuties(ctx)
	if err != nil {
		return api.Inventory{}, err
	}
	held, err := s.db.Holdings(ctx)
	if err != nil {
		return api.Inventory{}, err
	}
	years, err := s.retentionYears(ctx)
	if err != nil {
		return api.Inventory{}, err
	}
	c := store.Cutoffs{Now: now, Cancelled: now.AddDate(-years, 0, 0), ICTDays: s.ict.longest()}
	if w := s.signupExpiry(); w > 0 {
		c.Signups = now.Add(-w)
	}
	overdue, err := s.db.Overdue(ctx, c)
	if err != nil {
		return api.Inventory{}, err
	}
	// What gateways hold, as they last reported it.
	s.mu.Lock()
	for _, st := range s.status {
		r := st.report.Records
		if r == nil {
			continue
		}
		sp := held[holdGatewaySpooled]
		sp.Count += r.Spooled
		held[holdGatewaySpooled] = sp
		for _, g := range r.SetAside {
			h := held[holdGatewaySetAside]
			h.Count += g.Count
			if !g.Oldest.IsZero() && (h.Oldest.IsZero() || g.Oldest.Before(h.Oldest)) {
				h.Oldest = g.Oldest
			}
			held[holdGatewaySetAside] = h
			if g.Oldest.Before(c.Cancelled) {
				overdue[holdGatewaySetAside]++ // at least the oldest: the gateway purges them at its next report
			}
		}
	}
	s.mu.Unlock()
	inv := api.Inventory{At: now.UTC(), Categories: []api.InventoryCategory{}}
	if at := s.nextPurge.Load(); at > 0 {
		inv.NextPurge = time.Unix(at, 0).UTC()
	}
	for _, cat := range inventoryCategories {
		h := held[cat.name]
		out := api.InventoryCategory{Name: cat.name, What: cat.what, Where: cat.where, Count: h.Count, Oldest: h.Oldest,
			Duties: append([]string{}, duties[cat.duty]...), Overdue: overdue[cat.name], Retention: cat.retention}
		if cat.collectAll && s.cfg.CollectAll {
			out.Choice = "the operator collects subscriber records for all accounts (--collect-all): a choice, not a duty"
		}
		if cat.name == store.HoldPendingSignups && s.cfg.Signup {
			out.Choice = "the operator offers self-service sign-up (--signup)"
		}
		if strings.Contains(cat.retention, "%d") {
			out.Retention = fmt.Sprintf(cat.retention, years)
		}
		out.NoDuty = out.Count > 0 && len(out.Duties) == 0 && out.Choice == ""
		if out.NoDuty {
			inv.Breaches++
		}
		inv.Overdue += out.Overdue
		inv.Categories = append(inv.Categories, out)
	}
	return inv, nil
}

// retentionMetrics is what the retention check exports.
type retentionMetrics struct {
	overdue *prometheus.GaugeVec // by category (a fixed name, never personal data)
}

func (m *retentionMetrics) setUp(reg *prometheus.Registry) {
	m.overdue = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_control_retention_overdue_items",
		Help: "Items of personal data past their retention at the last retention check, by category."}, []string{"category"})
	reg.MustRegister(m.overdue)
}

// retentionCheck finds what is past its retention at now: it sets the
// metric and, if anything is, raises an incident candidate.
func (s *Server) retentionCheck(ctx context.Context, now time.Time) (api.Inventory, error) {
	inv, err := s.inventory(ctx, now)
	if err != nil {
		return inv, err
	}
	var over []string
	for _, c := range inv.Categories {
		s.retention.overdue.WithLabelValues(c.Name).Set(float64(c.Overdue))
		if c.Overdue > 0 {
			over = append(over, fmt.Sprintf("%s: %d", c.Name, c.Overdue))
		}
	}
	if len(over) > 0 {
		s.raiseCandidate(ctx, api.IncidentCandidate{Kind: kindRetentionOverdue, Node: api.ControlNode, Types: []int{int(typeDataBreach)}, DetectedAt: now,
			Summary: fmt.Sprintf("Personal data kept past its retention (%s): the retention job should have purged it. See 'meridian compliance retention-check'.", strings.Join(over, ", ")),
			Details: ictlog.Details("overdue", inv.Overdue)})
	}
	return inv, nil
}

func (s *Server) handleInventory(w http.ResponseWriter, r *http.Request) {
	inv, err := s.inventory(r.Context(), time.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inv)
}

func (s *Server) handleRetentionCheck(w http.ResponseWriter, r *http.Request) {
	inv, err := s.retentionCheck(r.Context(), time.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inv)
}
