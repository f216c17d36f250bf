package control

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// broadcast wakes every waiter when the peer set changes: each waiter holds
// the current channel, which notify closes and replaces.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}

const (
	defaultNetmapWait = 30 * time.Second
	maxNetmapWait     = 120 * time.Second
	// peerChangesKept is how much of the change log is kept for deltas;
	// gateways further behind get a full netmap.
	peerChangesKept = 100_000
)

// handleNetmap answers a gateway's long poll: no since (or a version this
// server does not know) gets a full netmap; otherwise the changes after
// since, as soon as there are any, or an empty delta after wait.
func (s *Server) handleNetmap(w http.ResponseWriter, r *http.Request) {
	gw := principalOf(r.Context()).gateway
	q := r.URL.Query()
	since := int64(-1) // no since: a full netmap
	var err error
	if v := q.Get("since"); v != "" {
		if since, err = strconv.ParseInt(v, 10, 64); err != nil || since < 0 {
			writeError(w, http.StatusBadRequest, "since must be a version number (leave it out for a full netmap)")
			return
		}
	}
	wait := defaultNetmapWait
	if v := q.Get("wait"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 || wait > maxNetmapWait {
			writeError(w, http.StatusBadRequest, "wait must be a duration between 0s and 120s")
			return
		}
	}
	s.seen(gw.Name, nil)
	if since >= 0 {
		s.markApplied(gw.Name, since)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		changed := s.changed.wait()
		// A removed gateway or a rotated credential ends the poll (gateways.go).
		if !s.credentialHolds(w, r) {
			return
		}
		if !s.inService(gw.Name) {
			// Out of service (it stands in a virtual-only country): it
			// holds no peers. Version 0 makes its first ask after returning
			// to service a delta from the beginning, that is, everything.
			if since != 0 {
				writeJSON(w, http.StatusOK, api.Netmap{Version: 0, Full: true, Peers: []api.Peer{}})
				return
			}
		} else {
			// Which peers owe session records follows the gateway's place
			// and jurisdiction: when that changed since its last netmap,
			// it gets a full one with every peer's Record flag.
			duty, err := s.recordDutyOf(r.Context(), gw.Name)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			cur, err := s.db.NetmapVersion(r.Context())
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if since < 0 || since > cur || !s.sessions.holds(gw.Name, duty) {
				s.writeFullNetmap(w, r, gw.Name, duty)
				return
			}
			if cur > since {
				nm, ok, err := s.db.NetmapSince(r.Context(), since)
				if err == nil && ok {
					err = s.markRecorded(r.Context(), &nm, duty)
				}
				if err != nil {
					s.fail(w, r, err)
					return
				}
				if !ok {
					s.writeFullNetmap(w, r, gw.Name, duty)
					return
				}
				s.metrics.netmapDeltas.Inc()
				writeJSON(w, http.StatusOK, nm)
				return
			}
		}
		select {
		case <-changed:
		case <-timer.C:
			writeJSON(w, http.StatusOK, api.Netmap{Version: since, Peers: []api.Peer{}})
			return
		case <-r.Context().Done():
			return
		}
	}
}

// writeFullNetmap answers gateway gw with every peer, marked for session
// records under duty.
func (s *Server) writeFullNetmap(w http.ResponseWriter, r *http.Request, gw string, duty recordDuty) {
	nm, err := s.db.FullNetmap(r.Context())
	if err == nil {
		err = s.markRecorded(r.Context(), &nm, duty)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	nm.Addresses = s.gatewayAddresses()
	s.sessions.sentTo(gw, duty)
	s.metrics.netmapFull.Inc()
	writeJSON(w, http.StatusOK, nm)
}

// markApplied records that a gateway holds netmap version v: it asks for
// changes after v only once it has applied v.
func (s *Server) markApplied(name string, v int64) {
	s.mu.Lock()
	st := s.status[name]
	newer := v > st.applied
	if newer {
		st.applied = v
		s.status[name] = st
	}
	s.mu.Unlock()
	if newer {
		s.applied.notify()
	}
}

// maxApplyWait bounds how long a device change waits for the gateways.
const maxApplyWait = 2 * time.Second

// waitApplied waits until every healthy gateway holds netmap version v (or
// newer), so that when the API answers "created" or "revoked" the gateways
// already act on it. It gives up after maxApplyWait: a slow gateway catches
// up on its own.
func (s *Server) waitApplied(ctx context.Context, v int64) {
	timer := time.NewTimer(maxApplyWait)
	defer timer.Stop()
	for {
		changed := s.applied.wait()
		if s.allApplied(v) {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (s *Server) allApplied(v int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, st := range s.status {
		if time.Since(st.lastSeen) < s.cfg.HeartbeatTimeout && !s.outOfService[name] && st.applied < v {
			return false
		}
	}
	return true
}
