package client

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/wg"
)

// Gateway returns the public key of the gateway the tunnel uses.
func (t *Tunnel) Gateway() wg.Key {
	t.peerMu.Lock()
	defer t.peerMu.Unlock()
	return t.peer.PublicKey
}

// SwitchGateway moves the tunnel to another gateway of the same service:
// same key, same tunnel addresses, same allowed IPs; only the peer's key
// and endpoint change. Connections in flight through the old gateway end.
func (t *Tunnel) SwitchGateway(pub wg.Key, endpoint string) error {
	t.peerMu.Lock()
	defer t.peerMu.Unlock()
	p := t.peer
	p.PublicKey, p.Endpoint = pub, endpoint
	cfg := wg.Config{Peers: []wg.PeerConfig{p}}
	uapi, err := cfg.PeersUAPI()
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := t.dev.IpcSet(uapi); err != nil {
		return fmt.Errorf("client: switching gateway: %w", err)
	}
	t.peer = p
	return nil
}

// Failover keeps a tunnel on a healthy gateway of its location. It polls
// the control server's public server list (cheaply: the list carries an
// ETag) and moves the tunnel when its gateway is reported unhealthy or out
// of the location, or when no handshake has completed for Stale.
type Failover struct {
	Tunnel   *Tunnel
	Servers  *api.Client // the control server (no token needed)
	Location string
	Interval time.Duration // how often to look; default 10 s
	Stale    time.Duration // no handshake for this long: try another gateway; default 150 s
	Logger   *slog.Logger
}

// Run watches until ctx ends.
func (f *Failover) Run(ctx context.Context) {
	interval, stale := f.Interval, f.Stale
	if interval == 0 {
		interval = 10 * time.Second
	}
	if stale == 0 {
		// WireGuard re-handshakes every 2 minutes while traffic flows
		// (PersistentKeepalive keeps it flowing); 150 s without one means
		// the gateway is not answering.
		stale = 150 * time.Second
	}
	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	since := time.Now() // the current gateway's start, for the stale rule
	var etag string
	var list api.ServerList
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sl, tag, err := f.Servers.ServerListIfChanged(ctx, etag)
		if err != nil {
			log.Debug("server list unavailable", "err", err)
		} else if tag != etag {
			list, etag = sl, tag
		}
		cur := f.Tunnel.Gateway()
		hs := f.Tunnel.LastHandshake()
		if hs.Before(since) {
			hs = since
		}
		reason := ""
		srv, ok := findServer(list, f.Location, cur)
		switch {
		case len(list.Locations) > 0 && !ok:
			reason = "gateway no longer serves the location"
		case ok && !srv.Healthy:
			reason = "gateway reported unhealthy"
		case time.Since(hs) > stale:
			reason = "no handshake with the gateway"
		}
		if reason == "" {
			continue
		}
		next, found := bestServer(list, f.Location, cur)
		if !found {
			log.Warn("no other healthy gateway in the location", "location", f.Location, "why", reason)
			continue
		}
		if err := f.Tunnel.SwitchGateway(next.PublicKey, next.Endpoint); err != nil {
			log.Warn("failover failed", "err", err)
			continue
		}
		since = time.Now()
		log.Info("moved to another gateway of the location", "location", f.Location, "gateway", next.Name, "why", reason)
	}
}

func findServer(list api.ServerList, location string, key wg.Key) (api.Server, bool) {
	for _, l := range list.Locations {
		if l.Code != location {
			continue
		}
		for _, s := range l.Servers {
			if s.PublicKey == key {
				return s, true
			}
		}
	}
	return api.Server{}, false
}

// bestServer is the least-loaded healthy server of the location other than
// the current one.
func bestServer(list api.ServerList, location string, current wg.Key) (api.Server, bool) {
	var best api.Server
	found := false
	for _, l := range list.Locations {
		if l.Code != location {
			continue
		}
		for _, s := range l.Servers {
			if s.Healthy && s.PublicKey != current && (!found || s.Load < best.Load) {
				best, found = s, true
			}
		}
	}
	return best, found
}
