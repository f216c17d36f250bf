package control

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/store"
)

// Credentials are random, shown once and stored as SHA-256 hashes. The
// prefix says what a credential is, so a leaked one is recognisable.
const (
	adminTokenPrefix  = "mrd-admin-"
	gatewayCredPrefix = "mrd-gw-"
)

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashSecret(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// principal is who a request comes from.
type principal struct {
	admin   *store.AdminToken
	gateway *api.Gateway
}

type principalKey struct{}

func principalOf(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authenticate resolves the bearer token to an admin or a gateway.
func (s *Server) authenticate(ctx context.Context, tok string) (principal, error) {
	switch {
	case strings.HasPrefix(tok, adminTokenPrefix):
		t, err := s.db.AdminTokenByHash(ctx, hashSecret(tok)) // live only: neither revoked nor expired (tokens.go)
		if err != nil {
			return principal{}, err
		}
		s.touchToken(ctx, t)
		return principal{admin: &t}, nil
	case strings.HasPrefix(tok, gatewayCredPrefix):
		g, err := s.db.GatewayByCredential(ctx, hashSecret(tok))
		if err != nil {
			return principal{}, err
		}
		return principal{gateway: &g}, nil
	}
	return principal{}, store.ErrNotFound
}

type role int

const (
	asAdmin      role = iota // an admin token with role admin
	asCompliance             // role compliance: lawful lookups, exports
	asVerifier               // role compliance or auditor: integrity checks
	asGateway                // a gateway credential
)

// allows reports whether principal p may call an endpoint that wants w.
func (p principal) allows(w role) bool {
	if w == asGateway {
		return p.gateway != nil
	}
	if p.admin == nil {
		return false
	}
	switch w {
	case asAdmin:
		return p.admin.Role == api.RoleAdmin
	case asCompliance:
		return p.admin.Role == api.RoleCompliance
	case asVerifier:
		return p.admin.Role == api.RoleCompliance || p.admin.Role == api.RoleAuditor
	}
	return false
}

// require wraps a handler so that only the given kind of caller gets in.
func (s *Server) require(want role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" {
			s.ictAuthFailed(r, want, principal{}, "no bearer token") // ICT log (ictlog.go)
			writeError(w, http.StatusUnauthorized, "missing bearer token (Authorization: Bearer …)")
			return
		}
		p, err := s.authenticate(r.Context(), tok)
		if errors.Is(err, store.ErrNotFound) {
			s.metrics.authFailures.Inc()
			s.ictAuthFailed(r, want, principal{}, "invalid or revoked token") // ICT log, failed-login detector

			// A source that keeps failing gets 429 (limits.go).
			if s.backOff(w, r) {
				return
			}
			writeError(w, http.StatusUnauthorized, "invalid, expired or revoked token")
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !p.allows(want) {
			s.ictAuthFailed(r, want, p, "role may not call this endpoint") // ICT log
			writeError(w, http.StatusForbidden, "this credential's role may not call this endpoint")
			return
		}
		w, logged := s.ictAccepted(w, r, p) // ICT log: the credential, and an admin request's route and status
		defer logged()
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

func secretEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
