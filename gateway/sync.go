package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/exit"
	"github.com/meridian-vpn/meridian/tunnet"
	"github.com/meridian-vpn/meridian/wg"
)

const (
	pollWait   = 25 * time.Second
	maxBackoff = 5 * time.Second
	// refusedGrace is how long the gateway goes on asking with a refused
	// credential before it stops: long enough for 'meridian gateway
	// rotate-credential' to store the new one after the control server
	// has switched to it.
	refusedGrace = 2 * time.Second
)

// syncLoop follows the control server's netmap. After any failure it asks
// for a full netmap again, and applies only the difference to what is
// installed, so live tunnels are not disturbed by a reconnect.
func (g *Gateway) syncLoop(ctx context.Context) {
	defer g.done.Done()
	since := int64(api.FullNetmap)
	backoff := 250 * time.Millisecond
	var refused time.Time // since when the credential has been refused
	var refusal error     // and the first answer that refused it
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, pollWait+15*time.Second)
		nm, err := g.client.Netmap(rctx, since, pollWait)
		cancel()
		if err == nil {
			err = g.apply(nm)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if g.connected.Swap(false) {
				g.log.Warn("control server unreachable; forwarding with the last netmap", "err", err)
			}
			// 401, or 429: the control server backs off a source whose
			// credentials keep failing, and answers its further failures
			// so (a valid credential is never answered 429).
			var se *api.StatusError
			if errors.As(err, &se) && (se.Code == http.StatusUnauthorized || se.Code == http.StatusTooManyRequests) {
				if refused.IsZero() {
					refused, refusal = time.Now(), err // the first answer says why
				}
				if g.credentialRenewed() {
					refused = time.Time{}
				} else if time.Since(refused) >= refusedGrace {
					g.fail(fmt.Errorf("the control server refuses this gateway's credential: the gateway was removed, or its credential rotated and the new one is not in %s; to serve again, join anew with an empty state directory and a join token: %w", g.cfg.StateDir, refusal))
					return
				}
			} else {
				refused = time.Time{}
			}
			since = api.FullNetmap
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		if !g.connected.Swap(true) {
			g.log.Info("following control server", "netmap_version", nm.Version, "peers", g.Peers())
		}
		backoff = 250 * time.Millisecond
		refused = time.Time{}
		since = nm.Version
	}
}

// apply installs a netmap into the WireGuard device, touching only the peers
// that change: one IpcSet carries exactly the additions, updates and
// removals. The session tracker then follows the peers that owe records.
// If the set fails, nothing of the netmap counts as installed, and the
// peers it touched are set again, or removed, by the next netmap
// (Gateway.unsure).
// Then the flows of tunnel addresses that no peer holds any more are ended
// in the data plane: a revoked device keeps no connection open.
func (g *Gateway) apply(nm api.Netmap) error {
	ended, err := g.install(nm)
	g.closeFlows(ended)
	return err
}

// install is apply without ending flows; it returns the tunnel addresses
// that removed or changed peers no longer hold.
func (g *Gateway) install(nm api.Netmap) (ended []netip.Addr, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if nm.RecordSealKey != nil {
		g.setRecordSealKey(*nm.RecordSealKey)
	}
	var b strings.Builder
	upserts := make(map[wg.Key]api.Peer, len(nm.Peers))
	removes := map[wg.Key]bool{}
	var changed []api.Peer // for the session tracker
	var set []wg.Key       // the peers b sets
	upsert := func(p api.Peer) {
		upserts[p.PublicKey] = p
		cur, ok := g.installed[p.PublicKey]
		if !ok || cur.Record != p.Record || !slices.Equal(cur.AllowedIPs, p.AllowedIPs) {
			changed = append(changed, p)
		}
		if ok && slices.Equal(cur.AllowedIPs, p.AllowedIPs) && !g.unsure[p.PublicKey] {
			return
		}
		set = append(set, p.PublicKey)
		if ok {
			for _, a := range hostAddrsOf(cur.AllowedIPs) {
				if !slices.Contains(hostAddrsOf(p.AllowedIPs), a) {
					ended = append(ended, a)
				}
			}
		}
		fmt.Fprintf(&b, "public_key=%s\nreplace_allowed_ips=true\n", p.PublicKey.Hex())
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	remove := func(k wg.Key) {
		removes[k] = true
		if _, ok := g.installed[k]; ok || g.unsure[k] {
			set = append(set, k)
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", k.Hex())
		}
	}
	for _, p := range nm.Peers {
		if p.Remove {
			remove(p.PublicKey)
		} else {
			upsert(p)
		}
	}
	if nm.Full {
		for _, k := range slices.Concat(slices.Collect(maps.Keys(g.installed)), slices.Collect(maps.Keys(g.unsure))) {
			if _, ok := upserts[k]; !ok && !removes[k] {
				remove(k)
			}
		}
	}
	if b.Len() > 0 {
		if err := g.dev.IpcSet(b.String()); err != nil {
			if g.unsure == nil {
				g.unsure = map[wg.Key]bool{}
			}
			for _, k := range set {
				g.unsure[k] = true
			}
			return nil, fmt.Errorf("applying netmap %d: %w", nm.Version, err)
		}
	}
	for _, k := range set {
		delete(g.unsure, k)
	}
	var gone []wg.Key
	for k := range removes {
		if p, ok := g.installed[k]; ok {
			gone = append(gone, k)
			ended = append(ended, hostAddrsOf(p.AllowedIPs)...)
		}
		delete(g.installed, k)
	}
	maps.Copy(g.installed, upserts)
	g.sessions.update(changed, gone)
	dirty := len(changed)+len(gone) > 0 || g.version != nm.Version
	g.version = nm.Version
	if dirty {
		select {
		case g.dirty <- struct{}{}:
		default:
		}
	}
	return ended, nil
}

// closeFlows ends the data plane's flows of tunnel addresses that no peer
// holds any more. The device no longer takes their packets, so no new flow
// of theirs starts after this.
func (g *Gateway) closeFlows(addrs []netip.Addr) {
	if len(addrs) == 0 {
		return
	}
	switch p := g.plane.(type) {
	case *exit.Exit:
		for _, a := range addrs {
			p.CloseFlows(a)
		}
	case *tunnet.TUN:
		if err := p.CloseFlows(addrs); err != nil {
			g.log.Warn("ending the flows of removed peers", "err", err)
		}
	}
}

func (g *Gateway) snapshotLocked() cachedNetmap {
	nm := cachedNetmap{Version: g.version, Peers: make([]api.Peer, 0, len(g.installed))}
	for _, p := range g.installed {
		nm.Peers = append(nm.Peers, p)
	}
	return nm
}

// saveLoop writes the installed netmap to the state directory, at most once
// every two seconds, so a restarted gateway can forward before it reaches
// the control server.
func (g *Gateway) saveLoop(ctx context.Context) {
	defer g.done.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.dirty:
		}
		g.mu.Lock()
		nm := g.snapshotLocked()
		g.mu.Unlock()
		if err := saveNetmap(g.cfg.StateDir, nm); err != nil {
			g.log.Warn("saving netmap", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}
