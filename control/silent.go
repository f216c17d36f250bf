package control

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// defaultSessionSilence is how long a gateway may stay silent before the
// control server ends its open sessions (Config.SessionSilence).
const defaultSessionSilence = 15 * time.Minute

// silentGateways is what the control server knows of when it last heard
// from each gateway, for ending the sessions of gateways gone silent.
type silentGateways struct {
	heard    map[string]time.Time // nil until loaded
	saved    map[string]time.Time // as kept in the database
	ended    map[string]time.Time // the last time heard as of which a gateway's sessions were ended
	since    time.Time            // the first round: silence counts from then too
	inferred prometheus.Counter
}

// watchSilentGateways ends, every so often, the open sessions of gateways
// the control server has not heard from for Config.SessionSilence, as of
// the last time it heard from them (an inferred end, which lookups tell
// apart from a reported one): a gateway that never comes back must not
// leave its port blocks attributed to their last holders for ever. A
// gateway that comes back later reports its own ends, which replace the
// inferred ones.
func (s *Server) watchSilentGateways(ctx context.Context) {
	if s.cfg.SessionSilence < 0 {
		return // the operator's choice: sessions stay open until their gateway reports
	}
	every := min(max(s.cfg.SessionSilence/4, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.endSilentSessions(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("ending the sessions of silent gateways", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// endSilentSessions keeps when each gateway was last heard from, and ends
// the open sessions of those silent at now for SessionSilence or longer.
func (s *Server) endSilentSessions(ctx context.Context, now time.Time) error {
	sg := &s.sessions.silent
	if sg.heard == nil {
		heard, err := s.db.GatewaysHeard(ctx)
		if err != nil {
			return err
		}
		sg.heard, sg.saved, sg.ended, sg.since = heard, map[string]time.Time{}, map[string]time.Time{}, now
		for gw, at := range heard {
			sg.saved[gw] = at
		}
	}
	s.mu.Lock()
	for gw, st := range s.status {
		if st.lastSeen.After(sg.heard[gw]) {
			sg.heard[gw] = st.lastSeen
		}
	}
	s.mu.Unlock()
	changed := map[string]time.Time{}
	for gw, at := range sg.heard {
		if !at.Equal(sg.saved[gw]) {
			changed[gw] = at
		}
	}
	if err := s.db.SaveGatewaysHeard(ctx, changed); err != nil {
		return err
	}
	for gw, at := range changed {
		sg.saved[gw] = at
	}
	if now.Sub(sg.since) < s.cfg.SessionSilence {
		// Gateways could not be heard while the control server was down:
		// each gets SessionSilence from its start to speak.
		return nil
	}
	for gw, at := range sg.heard {
		if now.Sub(at) < s.cfg.SessionSilence || sg.ended[gw].Equal(at) {
			continue
		}
		s.mu.Lock()
		back := s.status[gw].lastSeen.After(at)
		s.mu.Unlock()
		if back { // it spoke meanwhile: the next round sees it
			continue
		}
		n, err := s.db.EndOpenSessions(ctx, gw, at, s.sessionHook(ctx))
		if err != nil {
			return err
		}
		sg.ended[gw] = at
		if n > 0 {
			sg.inferred.Add(float64(n))
			s.log.Warn("gateway silent: its open sessions ended as of the last time it was heard from", "gateway", gw, "sessions", n, "last_heard", at.UTC().Format(time.RFC3339))
		}
	}
	return nil
}
