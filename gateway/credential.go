package gateway

import (
	"context"
	"fmt"

	"github.com/meridian-vpn/meridian/api"
)

// A gateway's credential can be rotated on its host while it runs
// (RotateCredential, 'meridian gateway rotate-credential'): the new one is
// stored in the state directory, and the running gateway, refused with the
// old one, reads it from there and goes on. A gateway refused with the
// credential its state directory holds was removed: it stops (Done, Err)
// rather than asking again and again.

// RotateCredential swaps the credential of the gateway whose state
// directory is dir for a new one, and stores that in dir (atomically, as
// every state write). The old credential stops working at once.
func RotateCredential(ctx context.Context, dir string) (api.GatewayCredential, error) {
	st, err := loadState(dir)
	if err != nil {
		return api.GatewayCredential{}, err
	}
	if st == nil || st.Credential == "" {
		return api.GatewayCredential{}, fmt.Errorf("%s holds no joined gateway", dir)
	}
	c, err := api.NewClient(st.Control, st.Credential, st.CAHash)
	if err != nil {
		return api.GatewayCredential{}, err
	}
	nc, err := c.RotateCredential(ctx, st.Name)
	if err != nil {
		return api.GatewayCredential{}, fmt.Errorf("rotating the credential of %s: %w", st.Name, err)
	}
	st.Credential = nc.Credential
	if err := st.save(dir); err != nil {
		return api.GatewayCredential{}, fmt.Errorf("the control server switched %s to a new credential, but storing it failed (%w); remove the gateway and join it anew", st.Name, err)
	}
	return nc, nil
}

// credentialRenewed reads the state directory again after the control
// server refused the credential: if it holds another one (rotated by
// RotateCredential), the gateway uses that from now on.
func (g *Gateway) credentialRenewed() bool {
	st, err := loadState(g.cfg.StateDir)
	if err != nil {
		g.log.Warn("reading the state directory for a rotated credential", "err", err)
		return false
	}
	if st == nil || st.Credential == "" || st.Credential == g.st.Credential {
		return false
	}
	g.st.Credential = st.Credential
	g.client.SetToken(st.Credential)
	g.log.Info("using the gateway's rotated credential")
	return true
}

// fail stops the gateway's following of the control server for good.
func (g *Gateway) fail(err error) {
	g.failure = err
	g.log.Error("gateway stopped", "err", err)
	close(g.failed)
}

// Done is closed when the gateway has stopped following the control server
// for good (Err says why); Close still has to be called.
func (g *Gateway) Done() <-chan struct{} { return g.failed }

// Err says why the gateway stopped, once Done is closed; nil before.
func (g *Gateway) Err() error {
	select {
	case <-g.failed:
		return g.failure
	default:
		return nil
	}
}
