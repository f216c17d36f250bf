package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ictlog"
	"github.com/meridian-vpn/meridian/store"
)

// A gateway leaves the fleet when an admin removes it (DELETE
// /gateways/{name}): its credential stops working at once, its pending
// long poll ends with 401, and it is no longer among the healthy gateways
// a device change waits for. Its place and its membership of locations go
// with it; a location it served alone stays, with no gateway, for the
// operator to give another or remove (the answer names it): removal, the
// answer to a leaked credential or a lost machine, never waits on that.
// Its session records stay, as the ledger keeps them.
//
// A gateway swaps its own credential for a new one (POST
// /gateways/{name}/rotate-credential with its current credential; 'meridian
// gateway rotate-credential' on its host, which stores the new one in the
// state directory): the old one stops at once. Only the gateway itself may:
// a new credential handed to an admin would still have to reach the
// gateway's host, and an admin who distrusts a gateway removes it.

func (s *Server) handleRemoveGateway(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rm, err := s.db.RemoveGateway(r.Context(), actor(r.Context()), name)
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no gateway named %q", name))
		return
	}
	s.forgetGateway(r.Context(), name)
	s.log.Info("gateway removed", "gateway", name, "locations_left_without_gateway", len(rm.Emptied))
	s.ict.record(api.ControlNode, api.ICTLogEntry{At: time.Now(), Category: ictlog.Gateway, Event: "gateway removed", Outcome: ictlog.Success,
		Actor: who(principalOf(r.Context())), Details: ictlog.Details("gateway", name, "emptied_locations", rm.Emptied)}, 0)
	writeJSON(w, http.StatusOK, api.GatewayRemoval{Name: name, Locations: rm.Locations, Emptied: rm.Emptied})
}

// forgetGateway drops what the server holds in memory of a removed
// gateway, and wakes the long polls (its own ends: its credential no
// longer holds) and the device changes waiting for gateways (they no
// longer wait for it).
func (s *Server) forgetGateway(ctx context.Context, name string) {
	s.mu.Lock()
	delete(s.status, name)
	s.mu.Unlock()
	s.held.mu.Lock()
	delete(s.held.resend, name)
	delete(s.held.discard, name)
	s.held.mu.Unlock()
	s.ict.mu.Lock()
	delete(s.ict.heard, name)
	delete(s.ict.counters, name)
	s.ict.mu.Unlock()
	if err := s.refreshService(ctx); err != nil { // also wakes the long polls
		s.log.Warn("reading the fleet after a gateway's removal", "err", err)
		s.changed.notify()
	}
	s.applied.notify()
}

func (s *Server) handleRotateCredential(w http.ResponseWriter, r *http.Request) {
	gw := principalOf(r.Context()).gateway
	if name := r.PathValue("name"); name != gw.Name {
		writeError(w, http.StatusForbidden, "a gateway may rotate only its own credential")
		return
	}
	cred := gatewayCredPrefix + randomString(32)
	err := s.db.RotateGatewayCredential(r.Context(), gw.Name, hashSecret(bearer(r)), hashSecret(cred))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusUnauthorized, "this credential was rotated or the gateway removed meanwhile")
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ictCredential(r, "gateway credential rotated", "gateway", gw.Name)
	s.changed.notify() // long polls with the old credential end
	writeJSON(w, http.StatusOK, api.GatewayCredential{Name: gw.Name, Credential: cred})
}

// credentialHolds checks, for a gateway's long poll woken up, that the
// credential it came with still works; if not, it answers 401 (or 500)
// and returns false.
func (s *Server) credentialHolds(w http.ResponseWriter, r *http.Request) bool {
	_, err := s.db.GatewayByCredential(r.Context(), hashSecret(bearer(r)))
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusUnauthorized, "gateway credential no longer valid: the gateway was removed or its credential rotated")
		return false
	case err != nil:
		s.fail(w, r, err)
		return false
	}
	return true
}
