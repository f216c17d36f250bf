package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Client is a typed client of the control server's API.
type Client struct {
	base  *url.URL
	token atomic.Pointer[string] // replaced by SetToken (credentials.go)
	http  *http.Client
}

// NewClient returns a client for the control server at baseURL (scheme and
// host, e.g. https://control.example:8443). token is the bearer credential
// (admin token or gateway credential; may be empty for joining). caHash is
// the hex SHA-256 of the control CA certificate: with https it is required,
// and the server's chain must lead to exactly that CA. Plain http is allowed
// only to loopback addresses.
func NewClient(baseURL, token, caHash string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("control server URL %q: want http(s)://host:port", baseURL)
	}
	tr := &http.Transport{
		Proxy:               nil, // never send control traffic through an environment proxy
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	switch u.Scheme {
	case "http":
		if !IsLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("control server URL %q: plain http is allowed only on loopback; use https", baseURL)
		}
	case "https":
		if caHash == "" {
			return nil, fmt.Errorf("control server URL %q: https needs the control CA fingerprint (from the join token or --ca-sha256)", baseURL)
		}
		if b, err := hex.DecodeString(caHash); err != nil || len(b) != sha256.Size {
			return nil, errors.New("control CA fingerprint is not a SHA-256 fingerprint: want its 64 hex digits, without colons (as a join token carries it)")
		}
		tr.TLSClientConfig = PinnedTLS(caHash)
	default:
		return nil, fmt.Errorf("control server URL %q: scheme must be http or https", baseURL)
	}
	c := &Client{base: u, http: &http.Client{Transport: tr}}
	c.SetToken(token)
	return c, nil
}

// IsLoopbackHost reports whether host (a name or address) is loopback.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// PinnedTLS returns a TLS client configuration that accepts a server only if
// its certificate chains to the CA whose certificate has SHA-256 caHash.
func PinnedTLS(caHash string) *tls.Config {
	want := strings.ToLower(caHash)
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("control server sent no certificate")
			}
			var ca *x509.Certificate
			for _, c := range cs.PeerCertificates[1:] {
				sum := sha256.Sum256(c.Raw)
				if hex.EncodeToString(sum[:]) == want {
					ca = c
				}
			}
			if ca == nil {
				return errors.New("control server's CA does not match the pinned fingerprint (wrong server, or a token from another control server)")
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}
}

// StatusError is a non-2xx answer from the server.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Code) }

// Do sends a JSON request and decodes a JSON answer into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+Prefix+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := c.bearerToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// CreateUser adds an account.
func (c *Client) CreateUser(ctx context.Context, r CreateUserRequest) (User, error) {
	var u User
	return u, c.Do(ctx, "POST", "/users", r, &u)
}

// Users lists accounts.
func (c *Client) Users(ctx context.Context) ([]User, error) {
	var u []User
	return u, c.Do(ctx, "GET", "/users", nil, &u)
}

// DeleteUser removes an account without devices.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/users/"+url.PathEscape(name), nil, nil)
}

// CreateDevice adds a device.
func (c *Client) CreateDevice(ctx context.Context, r CreateDeviceRequest) (CreateDeviceResponse, error) {
	var d CreateDeviceResponse
	return d, c.Do(ctx, "POST", "/devices", r, &d)
}

// Devices lists devices, of one user if user is not empty.
func (c *Client) Devices(ctx context.Context, user string) ([]Device, error) {
	var d []Device
	p := "/devices"
	if user != "" {
		p += "?user=" + url.QueryEscape(user)
	}
	return d, c.Do(ctx, "GET", p, nil, &d)
}

// RevokeDevice revokes a device: gateways drop it within seconds.
func (c *Client) RevokeDevice(ctx context.Context, id int64) (Device, error) {
	var d Device
	return d, c.Do(ctx, "POST", fmt.Sprintf("/devices/%d/revoke", id), nil, &d)
}

// DeleteDevice deletes a device and frees its addresses.
func (c *Client) DeleteDevice(ctx context.Context, id int64) error {
	return c.Do(ctx, "DELETE", fmt.Sprintf("/devices/%d", id), nil, nil)
}

// CreateJoinToken creates a gateway join token.
func (c *Client) CreateJoinToken(ctx context.Context, r JoinTokenRequest) (JoinToken, error) {
	var t JoinToken
	return t, c.Do(ctx, "POST", "/gateway-tokens", r, &t)
}

// JoinTokens lists join tokens (without their secrets).
func (c *Client) JoinTokens(ctx context.Context) ([]JoinToken, error) {
	var t []JoinToken
	return t, c.Do(ctx, "GET", "/gateway-tokens", nil, &t)
}

// RevokeJoinToken revokes a join token.
func (c *Client) RevokeJoinToken(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/gateway-tokens/"+url.PathEscape(id), nil, nil)
}

// Gateways lists gateways with their status and load.
func (c *Client) Gateways(ctx context.Context) ([]Gateway, error) {
	var g []Gateway
	return g, c.Do(ctx, "GET", "/gateways", nil, &g)
}

// Join registers a gateway using a join token (the client's token).
func (c *Client) Join(ctx context.Context, r JoinRequest) (JoinResponse, error) {
	var j JoinResponse
	return j, c.Do(ctx, "POST", "/gateways/join", r, &j)
}

// FullNetmap asks for every peer a gateway must accept, at once.
const FullNetmap = -1

// Netmap long-polls for the peers a gateway must accept. since FullNetmap
// asks for a full netmap; otherwise the answer holds the changes after
// since, waiting up to wait for one to happen.
func (c *Client) Netmap(ctx context.Context, since int64, wait time.Duration) (Netmap, error) {
	var nm Netmap
	p := fmt.Sprintf("/gateway/netmap?wait=%s", wait)
	if since != FullNetmap {
		p += fmt.Sprintf("&since=%d", since)
	}
	return nm, c.Do(ctx, "GET", p, nil, &nm)
}

// Report sends a gateway's health and aggregate load.
func (c *Client) Report(ctx context.Context, r GatewayReport) error {
	return c.Do(ctx, "POST", "/gateway/report", r, nil)
}

// Health checks that the server answers.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	return h, c.Do(ctx, "GET", "/health", nil, &h)
}

// SetPlace declares where a gateway stands ("" or ControlNode: the control
// server).
func (c *Client) SetPlace(ctx context.Context, node string, p Place) (Place, error) {
	path := "/gateways/" + url.PathEscape(node) + "/place"
	if node == "" || node == ControlNode {
		path = "/control/place"
	}
	var out Place
	return out, c.Do(ctx, "PUT", path, p, &out)
}

// ControlPlace returns where the control server stands.
func (c *Client) ControlPlace(ctx context.Context) (Place, error) {
	var p Place
	return p, c.Do(ctx, "GET", "/control/place", nil, &p)
}

// CreateLocation adds a location.
func (c *Client) CreateLocation(ctx context.Context, l Location) (Location, error) {
	var out Location
	return out, c.Do(ctx, "POST", "/locations", l, &out)
}

// Locations lists locations.
func (c *Client) Locations(ctx context.Context) ([]Location, error) {
	var out []Location
	return out, c.Do(ctx, "GET", "/locations", nil, &out)
}

// RemoveLocation removes a location no device uses.
func (c *Client) RemoveLocation(ctx context.Context, code string) error {
	return c.Do(ctx, "DELETE", "/locations/"+url.PathEscape(code), nil, nil)
}

// PreviewJurisdiction says what setting j would change, without setting it.
func (c *Client) PreviewJurisdiction(ctx context.Context, j Jurisdiction) (DutyPreview, error) {
	var out DutyPreview
	return out, c.Do(ctx, "POST", "/jurisdictions/"+url.PathEscape(j.Country)+"/preview", j, &out)
}

// Operator returns what the operator has declared about itself.
func (c *Client) Operator(ctx context.Context) (Operator, error) {
	var out Operator
	return out, c.Do(ctx, "GET", "/operator", nil, &out)
}

// SetOperator declares the countries the operator is established in.
func (c *Client) SetOperator(ctx context.Context, o Operator) (Operator, error) {
	var out Operator
	return out, c.Do(ctx, "PUT", "/operator", o, &out)
}

// PreviewOperator says what SetOperator(o) would change, without it.
func (c *Client) PreviewOperator(ctx context.Context, o Operator) (DutyPreview, error) {
	var out DutyPreview
	return out, c.Do(ctx, "POST", "/operator/preview", o, &out)
}

// SetJurisdiction sets a country's duty profile and stance.
func (c *Client) SetJurisdiction(ctx context.Context, j Jurisdiction) (Jurisdiction, error) {
	var out Jurisdiction
	return out, c.Do(ctx, "PUT", "/jurisdictions/"+url.PathEscape(j.Country), j, &out)
}

// Jurisdictions lists the configured countries.
func (c *Client) Jurisdictions(ctx context.Context) ([]Jurisdiction, error) {
	var out []Jurisdiction
	return out, c.Do(ctx, "GET", "/jurisdictions", nil, &out)
}

// Explain says which duties apply on a gateway ("" for the control
// server), for a user's tenant kind if user is set.
func (c *Client) Explain(ctx context.Context, gateway, user string) (Explanation, error) {
	return c.ExplainAt(ctx, gateway, user, "")
}

// ExplainAt is Explain for sessions on a location (its market reading);
// "" for none.
func (c *Client) ExplainAt(ctx context.Context, gateway, user, location string) (Explanation, error) {
	q := url.Values{}
	if location != "" {
		q.Set("location", location)
	}
	if gateway != "" {
		q.Set("gateway", gateway)
	}
	if user != "" {
		q.Set("user", user)
	}
	var out Explanation
	return out, c.Do(ctx, "GET", "/jurisdictions/explain?"+q.Encode(), nil, &out)
}

// SetProfile stores an operator-defined duty profile given as JSON.
func (c *Client) SetProfile(ctx context.Context, name string, body json.RawMessage) error {
	return c.Do(ctx, "PUT", "/profiles/"+url.PathEscape(name), body, nil)
}

// Profiles returns the duty profiles by name, as JSON.
func (c *Client) Profiles(ctx context.Context) (map[string]json.RawMessage, error) {
	var out map[string]json.RawMessage
	return out, c.Do(ctx, "GET", "/profiles", nil, &out)
}

// ServerList returns the clients' server list.
func (c *Client) ServerList(ctx context.Context) (ServerList, error) {
	var out ServerList
	return out, c.Do(ctx, "GET", "/serverlist", nil, &out)
}

// DeviceConfig returns the server side of a device's config for a location.
func (c *Client) DeviceConfig(ctx context.Context, id int64, location string) (DeviceConfigResponse, error) {
	var out DeviceConfigResponse
	return out, c.Do(ctx, "GET", fmt.Sprintf("/devices/%d/config?location=%s", id, url.QueryEscape(location)), nil, &out)
}

// ServerListIfChanged fetches the server list unless it still has ETag
// etag; it returns the list and its ETag (unchanged list: zero list, same
// etag).
func (c *Client) ServerListIfChanged(ctx context.Context, etag string) (ServerList, string, error) {
	var sl ServerList
	req, err := http.NewRequestWithContext(ctx, "GET", c.base.String()+Prefix+"/serverlist", nil)
	if err != nil {
		return sl, etag, err
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return sl, etag, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return sl, etag, nil
	case http.StatusOK:
		return sl, resp.Header.Get("ETag"), json.NewDecoder(resp.Body).Decode(&sl)
	}
	return sl, etag, &StatusError{Code: resp.StatusCode, Message: "server list: " + resp.Status}
}

// BaseURL is the control server's URL.
func (c *Client) BaseURL() string { return c.base.String() }
