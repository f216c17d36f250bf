package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/meridian-vpn/meridian/wg"
)

// DefaultTUNName is the interface that StartTUN creates by default.
const DefaultTUNName = "mrdc0"

// TUNOptions configures StartTUN.
type TUNOptions struct {
	// Name of the TUN interface; "" = DefaultTUNName.
	Name string
	// Logger receives the tunnel's logs; nil = slog.Default().
	Logger *slog.Logger
}

// TUN is a running WireGuard tunnel on a kernel TUN interface.
type TUN struct {
	log  *slog.Logger
	dev  *device.Device
	name string
	// pinned are the host routes StartTUN added for peer endpoints, as
	// arguments to `ip route add`/`ip route del`.
	pinned [][]string

	closeOnce sync.Once
	closeErr  error
}

// StartTUN brings the tunnel up on a kernel TUN interface for the whole
// machine (Linux; needs CAP_NET_ADMIN and iproute2's ip): the
// configuration's addresses on the interface, and routes through it for
// every peer's AllowedIPs. A default route (0.0.0.0/0, ::/0) becomes its two
// halves (0.0.0.0/1 and 128.0.0.0/1, ::/1 and 8000::/1), which win over the
// machine's own default route without replacing it; a peer endpoint that the
// routes would capture gets a host route through the way it was reached
// before, so that the encrypted packets do not loop into the tunnel.
//
// The configuration's DNS servers are not applied: the machine's resolver
// stays as it is. Close removes the interface, and with it its addresses and
// routes, and the endpoint routes.
func StartTUN(cfg *wg.Config, opts TUNOptions) (*TUN, error) {
	addrs, mtu, uapi, err := checkConfig(cfg)
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "linux" {
		return nil, errors.New("client: --tun is supported on Linux only; use --socks5")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("client: --tun needs the ip tool: apt-get install iproute2")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	name := opts.Name
	if name == "" {
		name = DefaultTUNName
	}
	routes := tunRoutes(cfg)

	tunDev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, createTUNError(name, err)
	}
	if name, err = tunDev.Name(); err != nil {
		tunDev.Close()
		return nil, fmt.Errorf("client: TUN name: %w", err)
	}
	for _, p := range addrs {
		args := []string{"addr", "add", p.String(), "dev", name}
		if p.Addr().Is6() {
			args = append(args, "nodad") // point to point: no one to clash with
		}
		if err = ip(args...); err != nil {
			break
		}
	}
	if err == nil {
		err = ip("link", "set", "dev", name, "up")
	}
	if err != nil {
		tunDev.Close()
		return nil, err
	}
	dev, err := startDevice(tunDev, uapi, log)
	if err != nil {
		return nil, err
	}
	t := &TUN{log: log, dev: dev, name: name}
	if err := t.route(routes); err != nil {
		t.Close()
		return nil, err
	}
	log.Info("tunnel up", "interface", name, "peers", len(cfg.Peers), "addresses", len(addrs),
		"routes", len(routes), "mtu", mtu)
	if len(cfg.DNS) > 0 {
		log.Warn("the configuration's DNS servers are not applied in TUN mode: the system resolver stays as it is")
	}
	return t, nil
}

// route pins the endpoints that routes would capture to the routes they
// have now, then routes routes through the TUN.
func (t *TUN) route(routes []netip.Prefix) error {
	uapi, err := t.dev.IpcGet()
	if err != nil {
		return fmt.Errorf("client: reading the WireGuard device: %w", err)
	}
	for _, ep := range endpoints(uapi) {
		if !slices.ContainsFunc(routes, func(p netip.Prefix) bool { return p.Contains(ep) }) {
			continue
		}
		if err := t.pin(ep); err != nil {
			return err
		}
	}
	for _, p := range routes {
		if err := ip("route", "add", p.String(), "dev", t.name); err != nil {
			return err
		}
	}
	return nil
}

// pin adds a host route for ep through the route the kernel uses for it
// now, unless ep is local or already has one.
func (t *TUN) pin(ep netip.Addr) error {
	out, err := exec.Command("ip", "-j", "route", "get", ep.String()).Output()
	if err != nil {
		return fmt.Errorf("client: no route to the WireGuard endpoint (ip route get): %v", exitText(err))
	}
	var got []struct {
		Type    string `json:"type"`
		Gateway string `json:"gateway"`
		Dev     string `json:"dev"`
	}
	if err := json.Unmarshal(out, &got); err != nil || len(got) != 1 || got[0].Dev == "" {
		return fmt.Errorf("client: cannot read `ip -j route get`: %q", out)
	}
	r := got[0]
	switch {
	case r.Type == "local":
		return nil // on this machine: the local table comes first
	case r.Dev == t.name:
		return errors.New("client: the WireGuard endpoint is inside the tunnel's own addresses")
	}
	args := []string{netip.PrefixFrom(ep, ep.BitLen()).String()}
	if r.Gateway != "" {
		args = append(args, "via", r.Gateway)
	}
	args = append(args, "dev", r.Dev)
	if err := ip(append([]string{"route", "add"}, args...)...); err != nil {
		if strings.Contains(err.Error(), "File exists") {
			return nil // someone else's route: leave it alone
		}
		return err
	}
	t.pinned = append(t.pinned, args)
	return nil
}

// tunRoutes returns the prefixes to route through the TUN: every peer's
// AllowedIPs, default routes as two halves, without duplicates and without
// the prefixes that the kernel routes to the interface for its own
// addresses.
func tunRoutes(cfg *wg.Config) []netip.Prefix {
	onLink := map[netip.Prefix]bool{}
	for _, a := range cfg.Addresses {
		if a.IsValid() && a.Bits() < a.Addr().BitLen() {
			onLink[a.Masked()] = true
		}
	}
	var routes []netip.Prefix
	for _, peer := range cfg.Peers {
		for _, p := range peer.AllowedIPs {
			if !p.IsValid() {
				continue
			}
			p = p.Masked()
			halves := []netip.Prefix{p}
			switch p {
			case netip.MustParsePrefix("0.0.0.0/0"):
				halves = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
			case netip.MustParsePrefix("::/0"):
				halves = []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")}
			}
			for _, h := range halves {
				if !onLink[h] && !slices.Contains(routes, h) {
					routes = append(routes, h)
				}
			}
		}
	}
	return routes
}

// endpoints returns the peer endpoints in IpcGet output.
func endpoints(uapi string) []netip.Addr {
	var eps []netip.Addr
	for _, line := range strings.Split(uapi, "\n") {
		if v, ok := strings.CutPrefix(line, "endpoint="); ok {
			if ap, err := netip.ParseAddrPort(v); err == nil {
				eps = append(eps, ap.Addr().Unmap())
			}
		}
	}
	return eps
}

// Name is the TUN interface's name.
func (t *TUN) Name() string { return t.name }

// LastHandshake is the most recent completed handshake over all peers, or
// the zero time if there has been none.
func (t *TUN) LastHandshake() time.Time { return deviceHandshake(t.dev) }

// Close closes the WireGuard device, which deletes the TUN interface with
// its addresses and routes, and removes the endpoint routes. It is safe to
// call more than once.
func (t *TUN) Close() error {
	t.closeOnce.Do(func() {
		t.dev.Close()
		<-t.dev.Wait()
		var errs []error
		for _, args := range slices.Backward(t.pinned) {
			if err := ip(append([]string{"route", "del"}, args...)...); err != nil {
				errs = append(errs, err)
			}
		}
		t.closeErr = errors.Join(errs...)
		t.log.Info("tunnel closed", "interface", t.name)
	})
	return t.closeErr
}

// createTUNError explains why the TUN could not be created.
func createTUNError(name string, err error) error {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return errors.New("client: --tun needs CAP_NET_ADMIN: run as root or use --socks5")
	case errors.Is(err, os.ErrNotExist), strings.Contains(err.Error(), "does not exist"):
		return errors.New("client: --tun needs /dev/net/tun: load the tun module (modprobe tun), or use --socks5")
	case errors.Is(err, syscall.EBUSY), errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("client: create TUN %s: %w (is it in use, or is that name taken by another kind of interface?)", name, err)
	}
	return fmt.Errorf("client: create TUN %s: %w", name, err)
}

// ip runs iproute2's ip with args.
func ip(args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("client: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// exitText is a failed command's error with its standard error output.
func exitText(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return err.Error()
}
