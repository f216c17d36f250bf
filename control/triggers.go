package control

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/jurisdiction"
)

// location returns the location coded code, nil if there is none.
func (f *fleet) location(code string) *api.Location {
	for i := range f.locations {
		if f.locations[i].Code == code {
			return &f.locations[i]
		}
	}
	return nil
}

// service is the jurisdiction.Service of a session of tenant kind k on
// node, standing in physical, on location code ("" or a removed location:
// none known).
func (f *fleet) service(node, physical, code string, k api.TenantKind) jurisdiction.Service {
	s := jurisdiction.Service{Node: jurisdiction.Node{Name: node, Physical: jurisdiction.Country(physical)}, Established: f.established, Tenant: k}
	if l := f.location(code); l != nil {
		s.Location = &jurisdiction.Location{Code: l.Code, Country: jurisdiction.Country(l.Country)}
	}
	return s
}

// duties is jurisdiction.Effective for a session of tenant kind k on
// gateway g (which must have a place) at location code.
func (f *fleet) duties(g *api.Gateway, code string, k api.TenantKind) ([]jurisdiction.Duty, error) {
	ds, err := jurisdiction.Effective(f.service(g.Name, g.Place.PhysicalCountry, code, k), f.jurisdictions, f.profiles)
	if err != nil {
		return nil, fmt.Errorf("duties of gateway %s: %w", g.Name, err)
	}
	return ds, nil
}

// nodeDuties are the duties of node, standing at place, whatever its
// tenants: those of service on no location plus those of every location
// it serves (a market reading brings a served location's country's node
// duties to it), each kind of each country once.
func (f *fleet) nodeDuties(node string, place *api.Place) ([]jurisdiction.Duty, error) {
	codes := []string{""}
	for _, l := range f.locations {
		if slices.Contains(l.Gateways, node) {
			codes = append(codes, l.Code)
		}
	}
	var all []jurisdiction.Duty
	for _, code := range codes {
		ds, err := jurisdiction.NodeDuties(f.service(node, place.PhysicalCountry, code, ""), f.jurisdictions, f.profiles)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if !slices.ContainsFunc(all, func(a jurisdiction.Duty) bool { return a.Kind == d.Kind && a.Country == d.Country }) {
				all = append(all, d)
			}
		}
	}
	return all, nil
}

// tenantKinds says, per tenant kind, whether something applies.
type tenantKinds struct{ consumer, enterprise bool }

func (k tenantKinds) of(t api.TenantKind) bool {
	return t == api.Consumer && k.consumer || t == api.Enterprise && k.enterprise
}

func (k *tenantKinds) set(t api.TenantKind) {
	if t == api.Consumer {
		k.consumer = true
	} else {
		k.enterprise = true
	}
}

var tenantKindsAll = []api.TenantKind{api.Consumer, api.Enterprise}

// recordNeed says, by location code ("" for devices on no location), for
// which tenant kinds service there needs a subscriber record: some
// in-service gateway serving it owes subscriber records for such sessions.
// block is the part of need brought by readings other than placement: a
// device of an account without a record loses those locations. Under
// placement the record is asked for when an account is made, as before
// readings existed, and accounts made earlier keep their service.
func (f *fleet) recordNeed() (need, block map[string]tenantKinds, why []string, err error) {
	need, block = map[string]tenantKinds{}, map[string]tenantKinds{}
	add := func(g *api.Gateway, code string) error {
		if g == nil || g.Place == nil || !g.InService {
			return nil
		}
		for _, k := range tenantKindsAll {
			ds, err := f.duties(g, code, k)
			if err != nil {
				return err
			}
			for _, d := range ds {
				if d.Kind != jurisdiction.SubscriberRecords {
					continue
				}
				n := need[code]
				n.set(k)
				need[code] = n
				if d.By != jurisdiction.Placement {
					b := block[code]
					b.set(k)
					block[code] = b
				}
				if w := fmt.Sprintf("gateway %s: %s", g.Name, d.Why); !slices.Contains(why, w) {
					why = append(why, w)
				}
			}
		}
		return nil
	}
	for i := range f.gateways {
		if err := add(&f.gateways[i], ""); err != nil {
			return nil, nil, nil, err
		}
	}
	for _, l := range f.locations {
		for _, name := range l.Gateways {
			if err := add(f.gateway(name), l.Code); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	return need, block, why, nil
}

// triggersOf converts stored trigger names; Effective checks them.
func triggersOf(names []string) []jurisdiction.Trigger {
	var ts []jurisdiction.Trigger
	for _, n := range names {
		ts = append(ts, jurisdiction.Trigger(n))
	}
	return ts
}

// withJurisdiction is f with j set for its country: the fleet a change
// would make, service states recomputed.
func (f *fleet) withJurisdiction(j jurisdiction.Jurisdiction) *fleet {
	g := *f
	g.jurisdictions = maps.Clone(f.jurisdictions)
	g.jurisdictions[j.Country] = j
	g.gateways = slices.Clone(f.gateways)
	for i := range g.gateways {
		gw := &g.gateways[i]
		gw.InService = gw.Place == nil || g.jurisdictionOf(gw.Place.PhysicalCountry).AllowsPresence()
	}
	return &g
}

// withEstablished is f with the operator established in cs.
func (f *fleet) withEstablished(cs []jurisdiction.Country) *fleet {
	g := *f
	g.established = cs
	return &g
}

// dutyPreview says what going from fleet before to after changes: duties
// gained and lost by gateway, location and tenant kind; accounts without a
// subscriber record whose devices' locations would newly need one; where
// sessions would newly be recorded.
func (s *Server) dutyPreview(ctx context.Context, before, after *fleet) (api.DutyPreview, error) {
	p := api.DutyPreview{Changes: []api.DutyChange{}, Stopped: []string{}, Recorded: []string{}}
	dutiesOf := func(f *fleet, name, code string, k api.TenantKind) ([]jurisdiction.Duty, error) {
		g := f.gateway(name)
		if g == nil || g.Place == nil || !g.InService {
			return nil, nil
		}
		return f.duties(g, code, k)
	}
	codes := []string{""}
	for _, l := range after.locations {
		codes = append(codes, l.Code)
	}
	for _, g := range after.gateways {
		for _, k := range tenantKindsAll {
			var atNone []api.DutyChange // listed for no location: not again for each
			for _, code := range codes {
				b, err := dutiesOf(before, g.Name, code, k)
				if err != nil {
					return p, err
				}
				a, err := dutiesOf(after, g.Name, code, k)
				if err != nil {
					return p, err
				}
				for _, ch := range []struct {
					change   string
					from, to []jurisdiction.Duty
				}{{"gain", b, a}, {"lose", a, b}} {
					for _, d := range ch.to {
						if slices.ContainsFunc(ch.from, func(o jurisdiction.Duty) bool { return o.Kind == d.Kind && o.Why == d.Why }) {
							continue
						}
						c := api.DutyChange{Gateway: g.Name, Location: code, Tenant: k, Kind: string(d.Kind), Change: ch.change, Why: d.Why}
						if code != "" && slices.ContainsFunc(atNone, func(o api.DutyChange) bool { return o.Kind == c.Kind && o.Why == c.Why && o.Change == c.Change }) {
							continue
						}
						if code == "" {
							atNone = append(atNone, c)
						}
						p.Changes = append(p.Changes, c)
						if d.Kind == jurisdiction.SessionRecords && ch.change == "gain" {
							where := "sessions on no location"
							if code != "" {
								where = "location " + code
							}
							p.Recorded = append(p.Recorded, fmt.Sprintf("gateway %s, %s, %s", g.Name, where, k))
						}
					}
				}
			}
		}
	}
	_, needBefore, _, err := before.recordNeed()
	if err != nil {
		return p, err
	}
	_, needAfter, _, err := after.recordNeed()
	if err != nil {
		return p, err
	}
	devs, err := s.db.DevicesWithoutRecord(ctx)
	if err != nil {
		return p, err
	}
	users := map[string]bool{}
	for _, d := range devs {
		if needAfter[d.Location].of(d.Kind) && !needBefore[d.Location].of(d.Kind) {
			users[d.User] = true
			loc := d.Location
			if loc == "" {
				loc = "(no location)"
			}
			if !slices.Contains(p.Stopped, loc) {
				p.Stopped = append(p.Stopped, loc)
			}
		}
	}
	slices.Sort(p.Stopped)
	p.NewlyNeedRecords = len(users)
	var b strings.Builder
	if len(p.Changes) == 0 {
		b.WriteString("No duty changes.\n")
	}
	for _, c := range p.Changes {
		where := "node and sessions on no location"
		if c.Location != "" {
			where = "sessions on location " + c.Location
		}
		fmt.Fprintf(&b, "gateway %s, %s, %s: %s %s (%s)\n", c.Gateway, where, c.Tenant, c.Change, c.Kind, c.Why)
	}
	for _, r := range p.Recorded {
		fmt.Fprintf(&b, "sessions newly recorded: %s\n", r)
	}
	if p.NewlyNeedRecords > 0 {
		fmt.Fprintf(&b, "%d account(s) without a subscriber record would newly need one; their service stops at %s until the records exist (the rest of their service continues).\n",
			p.NewlyNeedRecords, strings.Join(p.Stopped, ", "))
	}
	p.Text = b.String()
	return p, nil
}

// checkDutyChange previews going from before to after and refuses (409)
// a change that leaves accounts without a subscriber record they would
// newly need, unless confirmed. It answers the request itself when it
// refuses.
func (s *Server) checkDutyChange(w http.ResponseWriter, r *http.Request, before, after *fleet, confirm bool) (api.DutyPreview, bool) {
	p, err := s.dutyPreview(r.Context(), before, after)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return p, false
	}
	if p.NewlyNeedRecords > 0 && !confirm {
		writeError(w, http.StatusConflict, fmt.Sprintf("this change leaves %d account(s) without a subscriber record that would newly need one: their devices would lose %s until the records exist; preview it, then confirm to apply it",
			p.NewlyNeedRecords, strings.Join(p.Stopped, ", ")))
		return p, false
	}
	return p, true
}

func (s *Server) handlePreviewJurisdiction(w http.ResponseWriter, r *http.Request) {
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	_, j, ok := s.proposedJurisdiction(w, r, f)
	if !ok {
		return
	}
	p, err := s.dutyPreview(r.Context(), f, f.withJurisdiction(j))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleOperator(w http.ResponseWriter, r *http.Request) {
	est, err := s.db.Established(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.Operator{Established: est})
}

// proposedOperator reads a change of the operator's establishment; it
// answers the request itself when the change is bad.
func (s *Server) proposedOperator(w http.ResponseWriter, r *http.Request) (api.Operator, *fleet, *fleet, bool) {
	var req api.Operator
	if !decode(w, r, &req) {
		return req, nil, nil, false
	}
	var cs []jurisdiction.Country
	names := []string{}
	for _, n := range req.Established {
		c, err := jurisdiction.ParseCountry(n)
		if err != nil {
			writeError(w, http.StatusBadRequest, "established: "+err.Error())
			return req, nil, nil, false
		}
		if !slices.Contains(cs, c) {
			cs = append(cs, c)
			names = append(names, string(c))
		}
	}
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return req, nil, nil, false
	}
	req.Established = names
	return req, f, f.withEstablished(cs), true
}

func (s *Server) handlePreviewOperator(w http.ResponseWriter, r *http.Request) {
	_, before, after, ok := s.proposedOperator(w, r)
	if !ok {
		return
	}
	p, err := s.dutyPreview(r.Context(), before, after)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleSetOperator(w http.ResponseWriter, r *http.Request) {
	req, before, after, ok := s.proposedOperator(w, r)
	if !ok {
		return
	}
	p, ok := s.checkDutyChange(w, r, before, after, req.Confirm)
	if !ok {
		return
	}
	if err := s.db.SetEstablished(r.Context(), actor(r.Context()), req.Established, req.Confirm); err != nil {
		s.fail(w, r, err)
		return
	}
	s.changed.notify() // duties may have changed: gateways' long polls check
	writeJSON(w, http.StatusOK, api.Operator{Established: req.Established, Preview: &p})
}

// needsRecordAt answers why location code is refused to user (a message
// for the subscriber), or "" when it is not: service there needs a
// subscriber record the account lacks.
func (s *Server) needsRecordAt(ctx context.Context, f *fleet, user, code string) (string, error) {
	_, need, _, err := f.recordNeed()
	if err != nil {
		return "", err
	}
	u, err := s.db.User(ctx, user)
	if err != nil {
		return "", err
	}
	if !need[code].of(u.Kind) {
		return "", nil
	}
	seqs, err := s.db.SubscriberSeqs(ctx, user)
	if err != nil || len(seqs) > 0 {
		return "", err
	}
	where := "location " + code
	if code == "" {
		where = "this service"
	}
	return fmt.Sprintf("%s needs a subscriber record for %s accounts and this account has none; choose another location, or complete the subscriber record first", where, u.Kind), nil
}
