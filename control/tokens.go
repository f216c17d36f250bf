package control

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ictlog"
	"github.com/meridian-vpn/meridian/store"
)

// Admin tokens (any role) are listed, created with an optional expiry and
// revoked through the API by an admin; authenticate accepts only live ones
// (neither revoked nor expired). The last live admin-role token cannot be
// revoked, so the API always has someone to manage it; an operator locked
// out all the same (every admin token lost or expired) makes a new one on
// the control host with 'meridian control admin-token', which writes the
// database directly and needs no token.

// maxTokenTTL bounds the lifetime of a token that expires.
const maxTokenTTL = 10 * 365 * 24 * time.Hour

// touchEvery is how stale a token's last use may get before it is written
// again: at most one write a minute per token, not one per request.
const touchEvery = time.Minute

// touchToken records that t was used now, if its record is a minute old.
func (s *Server) touchToken(ctx context.Context, t store.AdminToken) {
	now := time.Now()
	if now.Sub(t.LastUsed) < touchEvery {
		return
	}
	if err := s.db.TouchAdminToken(ctx, t.ID, now); err != nil && ctx.Err() == nil {
		s.log.Warn("recording an admin token's last use", "err", err)
	}
}

// CreateAdminToken makes a new admin token, stores its hash and returns the
// token itself, which is not kept anywhere.
func (s *Server) CreateAdminToken(ctx context.Context, name string) (string, error) {
	return s.CreateToken(ctx, name, api.RoleAdmin)
}

// CreateToken makes a token with a role (api.RoleAdmin, RoleCompliance or
// RoleAuditor) that never expires.
func (s *Server) CreateToken(ctx context.Context, name, role string) (string, error) {
	t, err := createToken(ctx, s.db, "system", name, role, 0)
	return t.Token, err
}

// CreateTokenIn makes a token in the database of the control server whose
// data directory is dir, without opening the server, which may be running
// (its pools, clock and ledger are not needed for this). ttl 0: it never
// expires. It needs no token, so it is also the way back in for an
// operator who has lost every admin token.
func CreateTokenIn(ctx context.Context, dir, name, role string, ttl time.Duration) (string, error) {
	if err := checkTokenTTL(ttl); err != nil {
		return "", err
	}
	db, err := store.Open(ctx, filepath.Join(dir, "meridian.db"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	t, err := createToken(ctx, db, "local:meridian control admin-token", name, role, ttl)
	return t.Token, err
}

func checkTokenTTL(ttl time.Duration) error {
	if ttl != 0 && (ttl < time.Minute || ttl > maxTokenTTL) {
		return fmt.Errorf("ttl %s: want between 1 minute and 10 years, or 0 for a token that never expires", ttl)
	}
	return nil
}

func createToken(ctx context.Context, db *store.DB, actor, name, role string, ttl time.Duration) (api.AdminToken, error) {
	switch role {
	case api.RoleAdmin, api.RoleCompliance, api.RoleAuditor:
	default:
		return api.AdminToken{}, fmt.Errorf("role %q: want admin, compliance or auditor", role)
	}
	tok := adminTokenPrefix + randomString(32)
	t := api.AdminToken{ID: hex.EncodeToString(hashSecret(tok)[:6]), Name: name, Role: role, CreatedAt: time.Now().UTC().Truncate(time.Second), Token: tok}
	if ttl > 0 {
		t.ExpiresAt = t.CreatedAt.Add(ttl)
	}
	err := db.AddAdminToken(ctx, actor, store.NewAdminToken{ID: t.ID, Name: name, Role: role, Hash: hashSecret(tok), Expires: t.ExpiresAt})
	return t, err
}

func (s *Server) handleAdminTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.db.AdminTokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ts)
}

func (s *Server) handleCreateAdminToken(w http.ResponseWriter, r *http.Request) {
	var req api.AdminTokenRequest
	if !decode(w, r, &req) {
		return
	}
	if err := checkName("token", req.Name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := checkTokenTTL(req.TTL); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch req.Role {
	case api.RoleAdmin, api.RoleCompliance, api.RoleAuditor:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("role %q: want admin, compliance or auditor", req.Role))
		return
	}
	t, err := createToken(r.Context(), s.db, actor(r.Context()), req.Name, req.Role, req.TTL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ictCredential(r, "admin token created", "token", t.ID, "role", t.Role)
	writeJSON(w, http.StatusCreated, t)
}

func (s *Server) handleRevokeAdminToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.db.RevokeAdminToken(r.Context(), actor(r.Context()), id); err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no admin token with id %q; see 'meridian token list'", id))
		return
	}
	s.ictCredential(r, "admin token revoked", "token", id)
	w.WriteHeader(http.StatusNoContent)
}

// ictCredential records a change of a credential in the ICT log: which
// one (an id or a gateway's name), never the credential.
func (s *Server) ictCredential(r *http.Request, event string, details ...any) {
	s.ict.record(api.ControlNode, api.ICTLogEntry{At: time.Now(), Category: ictlog.Auth, Event: event, Outcome: ictlog.Success,
		Actor: who(principalOf(r.Context())), Details: ictlog.Details(append([]any{"route", routeOf(r)}, details...)...)}, 0)
}
