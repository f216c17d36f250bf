package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/jurisdiction"
	"github.com/meridian-vpn/meridian/store"
)

// clockPlan says what node's clock is checked against: the sources of the
// clock-sync duty that its place brings, or none when no duty applies or
// the place is not declared.
func clockPlan(f *fleet, node string, place *api.Place) (api.TimePlan, error) {
	if place == nil {
		return api.TimePlan{Why: "no declared place, so no duty is known"}, nil
	}
	j := f.jurisdictionOf(place.PhysicalCountry)
	duties, err := f.nodeDuties(node, place)
	if err != nil {
		return api.TimePlan{}, err
	}
	for _, d := range duties {
		if d.Kind == jurisdiction.ClockSync {
			return api.TimePlan{Required: true, Why: d.Why, Sources: d.Sources, MaxOffset: d.MaxOffset}, nil
		}
	}
	return api.TimePlan{Why: fmt.Sprintf("%s / %s: no clock-sync duty", place.PhysicalCountry, j.Profile)}, nil
}

// controlPlace is where the control server stands; nil if not declared.
func (s *Server) controlPlace(ctx context.Context) (*api.Place, error) {
	p, err := s.db.Place(ctx, api.ControlNode)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return p, err
}

// controlClockPlan is clockPlan for the control server itself.
func (s *Server) controlClockPlan(ctx context.Context) (api.TimePlan, error) {
	f, err := s.loadFleet(ctx)
	if err != nil {
		return api.TimePlan{}, err
	}
	place, err := s.controlPlace(ctx)
	if err != nil {
		return api.TimePlan{}, err
	}
	return clockPlan(f, api.ControlNode, place)
}

// watchTime runs the control node's time monitor, if it has one, until ctx
// ends, and adds it to the metrics. A second Serve leaves it to the first.
func (s *Server) watchTime(ctx context.Context) {
	if s.cfg.Clock == nil || s.metrics.reg.Register(s.cfg.Clock) != nil {
		return
	}
	s.cfg.Clock.Run(ctx, s.controlClockPlan)
}

// clockNow is the control node's sync state now, as the records and
// incidents it takes carry it: "unwatched" when it has no time monitor.
func (s *Server) clockNow() *api.ClockSync {
	c := s.cfg.Clock.Sync()
	return &c
}

// handleTime lists every node's clock: what its duties ask and what its
// monitor said (the control server's own, now; a gateway's, in its last
// report, taken at Status.At).
func (s *Server) handleTime(w http.ResponseWriter, r *http.Request) {
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	place, err := s.controlPlace(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctl := api.NodeTime{Node: api.ControlNode}
	if ctl.Plan, err = clockPlan(f, api.ControlNode, place); err != nil {
		s.fail(w, r, err)
		return
	}
	if s.cfg.Clock != nil {
		st := s.cfg.Clock.State()
		ctl.Status = &st
	}
	out := []api.NodeTime{ctl}
	for _, g := range f.gateways {
		nt := api.NodeTime{Node: g.Name, Status: g.Load.Time}
		if nt.Plan, err = clockPlan(f, g.Name, g.Place); err != nil {
			s.fail(w, r, err)
			return
		}
		out = append(out, nt)
	}
	writeJSON(w, http.StatusOK, out)
}

// handleGatewayTimePlan tells a gateway what its clock is checked against.
func (s *Server) handleGatewayTimePlan(w http.ResponseWriter, r *http.Request) {
	name := principalOf(r.Context()).gateway.Name
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	g := f.gateway(name)
	if g == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no gateway named %q", name))
		return
	}
	p, err := clockPlan(f, name, g.Place)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}
