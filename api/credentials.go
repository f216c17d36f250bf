package api

import (
	"context"
	"net/url"
	"time"
)

// AdminToken describes an admin token (any role) as the admin sees it:
// never its secret or hash. Token is set only in the answer to its
// creation, the one time it is shown.
type AdminToken struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Role       string    `json:"role"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`   // zero: never expires
	LastUsedAt time.Time `json:"last_used_at,omitzero"` // to the minute; zero: never used
	Revoked    bool      `json:"revoked"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	Token      string    `json:"token,omitempty"`
}

// AdminTokenRequest is the body of POST /admin-tokens.
type AdminTokenRequest struct {
	Name string        `json:"name"`
	Role string        `json:"role"` // admin, compliance or auditor
	TTL  time.Duration `json:"ttl"`  // nanoseconds; 0: the token never expires
}

// GatewayRemoval answers DELETE /gateways/{name}: the locations the
// gateway served, and those of them now served by no gateway at all.
type GatewayRemoval struct {
	Name      string   `json:"name"`
	Locations []string `json:"locations"`
	Emptied   []string `json:"emptied_locations"`
}

// GatewayCredential answers a credential rotation: the gateway's new
// credential, shown once. The old one no longer works.
type GatewayCredential struct {
	Name       string `json:"name"`
	Credential string `json:"credential"`
}

// AdminTokens lists the admin tokens, revoked and expired ones included.
func (c *Client) AdminTokens(ctx context.Context) ([]AdminToken, error) {
	var t []AdminToken
	return t, c.Do(ctx, "GET", "/admin-tokens", nil, &t)
}

// CreateAdminToken makes an admin token; the answer carries the token.
func (c *Client) CreateAdminToken(ctx context.Context, r AdminTokenRequest) (AdminToken, error) {
	var t AdminToken
	return t, c.Do(ctx, "POST", "/admin-tokens", r, &t)
}

// RevokeAdminToken revokes an admin token by id, at once.
func (c *Client) RevokeAdminToken(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/admin-tokens/"+url.PathEscape(id), nil, nil)
}

// RemoveGateway removes a gateway: its credential stops working at once.
func (c *Client) RemoveGateway(ctx context.Context, name string) (GatewayRemoval, error) {
	var r GatewayRemoval
	return r, c.Do(ctx, "DELETE", "/gateways/"+url.PathEscape(name), nil, &r)
}

// RotateCredential swaps the calling gateway's credential (the client's
// token) for a new one, which it returns; the client uses the new one from
// then on.
func (c *Client) RotateCredential(ctx context.Context, name string) (GatewayCredential, error) {
	var r GatewayCredential
	if err := c.Do(ctx, "POST", "/gateways/"+url.PathEscape(name)+"/rotate-credential", nil, &r); err != nil {
		return r, err
	}
	c.SetToken(r.Credential)
	return r, nil
}

// SetToken replaces the client's bearer credential, for requests from then
// on (a gateway whose credential was rotated). It may be called while other
// requests are under way.
func (c *Client) SetToken(tok string) { c.token.Store(&tok) }

// bearerToken is the client's credential ("" if none).
func (c *Client) bearerToken() string {
	if p := c.token.Load(); p != nil {
		return *p
	}
	return ""
}
