package control

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/check"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

func (s *Server) handleCreateJoinToken(w http.ResponseWriter, r *http.Request) {
	var req api.JoinTokenRequest
	if !decode(w, r, &req) {
		return
	}
	if req.TTL == 0 {
		req.TTL = defaultJoinTTL
	}
	if req.TTL < time.Minute || req.TTL > maxJoinTTL {
		writeError(w, http.StatusBadRequest, "ttl must be between 1 minute and 1 year")
		return
	}
	t, err := s.CreateJoinToken(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

// CreateJoinToken makes a join token and stores its hash.
func (s *Server) CreateJoinToken(ctx context.Context, req api.JoinTokenRequest) (api.JoinToken, error) {
	parts := api.JoinTokenParts{ID: randomString(6), Secret: randomString(24), CAHash: s.ca.Fingerprint()}
	exp := time.Now().Add(req.TTL).UTC().Truncate(time.Second)
	if err := s.db.AddJoinToken(ctx, parts.ID, hashSecret(parts.Secret), req.Reusable, exp); err != nil {
		return api.JoinToken{}, err
	}
	return api.JoinToken{ID: parts.ID, Token: parts.String(), Reusable: req.Reusable, ExpiresAt: exp}, nil
}

func (s *Server) handleJoinTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.db.JoinTokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ts)
}

func (s *Server) handleRevokeJoinToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.db.RevokeJoinToken(r.Context(), id); err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no join token with id %q", id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	parts, err := api.ParseJoinToken(bearer(r))
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	if parts.CAHash != s.ca.Fingerprint() {
		writeError(w, http.StatusUnauthorized, "join token was issued by another control server (CA fingerprint differs)")
		return
	}
	var req api.JoinRequest
	if !decode(w, r, &req) {
		return
	}
	if err := checkName("gateway", req.Name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.PublicKey.IsZero() {
		writeError(w, http.StatusBadRequest, "public_key is required")
		return
	}
	if err := wg.CheckPublicKey(req.PublicKey); err != nil {
		writeError(w, http.StatusBadRequest, "public_key: "+err.Error())
		return
	}
	if err := check.Endpoint(req.Endpoint); err != nil {
		writeError(w, http.StatusBadRequest, "endpoint "+err.Error()+": the address clients dial")
		return
	}
	switch req.Mode {
	case api.Userspace, api.TUN:
	default:
		writeError(w, http.StatusBadRequest, `mode must be "userspace" or "tun"`)
		return
	}
	cred := gatewayCredPrefix + randomString(32)
	err = s.db.JoinGateway(r.Context(), store.NewGateway{
		TokenID: parts.ID, Name: req.Name, PublicKey: req.PublicKey, Endpoint: req.Endpoint, Mode: req.Mode, CredHash: hashSecret(cred),
	}, func(stored []byte) bool { return secretEqual(stored, hashSecret(parts.Secret)) })
	s.ictGatewayJoined(r, req.Name, req.Mode, err) // ICT log (ictlog.go)
	if err != nil {
		s.metrics.joinFailures.Inc()
		s.storeError(w, r, err, "")
		return
	}
	s.log.Info("gateway joined", "gateway", req.Name, "mode", req.Mode)
	writeJSON(w, http.StatusCreated, api.JoinResponse{Name: req.Name, Credential: cred, Addresses: s.gatewayAddresses()})
}

// gatewayAddresses are the gateway's own tunnel addresses: the first host
// of each pool, with the pool's prefix length.
func (s *Server) gatewayAddresses() []netip.Prefix {
	return []netip.Prefix{
		netip.PrefixFrom(s.pool4.Gateway(), s.pool4.Prefix().Bits()),
		netip.PrefixFrom(s.pool6.Gateway(), s.pool6.Prefix().Bits()),
	}
}

func (s *Server) handleGateways(w http.ResponseWriter, r *http.Request) {
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, f.gateways)
}

func (s *Server) seen(name string, report *api.GatewayReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status[name]
	st.lastSeen = time.Now()
	if report != nil {
		st.report = *report
	}
	s.status[name] = st
}

func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) {
	var rep api.GatewayReport
	if !decode(w, r, &rep) {
		return
	}
	s.ictGatewayReport(r.Context(), principalOf(r.Context()).gateway.Name, &rep) // ICT log and DoS candidates (ictlog.go)
	s.seen(principalOf(r.Context()).gateway.Name, &rep)
	writeJSON(w, http.StatusOK, s.reportReply(r.Context(), principalOf(r.Context()).gateway.Name))
}
