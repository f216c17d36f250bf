package main

import (
	"log/slog"
	"strings"

	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/meridian-vpn/meridian/api"

	"github.com/meridian-vpn/meridian/client"
	"github.com/meridian-vpn/meridian/wg"
)

func runConnect(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	config := fs.String("config", "", "WireGuard config file (wg-quick format), as written by 'meridian device add --out'")
	socks := fs.String("socks5", "127.0.0.1:1080", "SOCKS5 proxy listen address (\"\" for none)")
	httpAddr := fs.String("http", "", "HTTP proxy listen address (CONNECT and plain http://), e.g. 127.0.0.1:8080")
	tunMode := fs.Bool("tun", false, "route the whole machine's traffic for the peer's AllowedIPs through a kernel TUN instead of proxies (Linux, needs root or CAP_NET_ADMIN)")
	tunName := fs.String("tun-name", client.DefaultTUNName, "name of the TUN interface for --tun")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *config == "" {
		return usageError{errors.New("connect: --config FILE is required")}
	}
	switch {
	case *tunMode && (set["socks5"] && *socks != "" || *httpAddr != ""):
		return usageError{errors.New("connect: --tun routes the machine's traffic itself: drop --socks5 and --http")}
	case !*tunMode && set["tun-name"]:
		return usageError{errors.New("connect: --tun-name needs --tun")}
	case !*tunMode && *socks == "" && *httpAddr == "":
		return usageError{errors.New("connect: give --socks5 and/or --http, or --tun: without a proxy the tunnel would carry nothing")}
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(*config)
	if err != nil {
		return err
	}
	cfg, err := wg.ParseConfig(b)
	if err != nil {
		return fmt.Errorf("%s: %w", *config, err)
	}

	var tunnel interface {
		LastHandshake() time.Time
		Close() error
	}
	if *tunMode {
		t, err := client.StartTUN(cfg, client.TUNOptions{Name: *tunName, Logger: log})
		if err != nil {
			return err
		}
		tunnel = t
		fmt.Printf("tunnel up to %s on interface %s\n", cfg.Peers[0].Endpoint, t.Name())
	} else {
		t, err := client.Start(cfg, client.Options{SOCKS5: *socks, HTTP: *httpAddr, Logger: log})
		if err != nil {
			return err
		}
		tunnel = t
		fmt.Printf("tunnel up to %s\n", cfg.Peers[0].Endpoint)
		if a := t.SOCKS5Addr(); a != nil {
			fmt.Printf("  SOCKS5 proxy  %s   (curl --proxy socks5h://%s ...)\n", a, a)
		}
		if a := t.HTTPAddr(); a != nil {
			fmt.Printf("  HTTP proxy    %s   (curl --proxy http://%s ...)\n", a, a)
		}
		if fo, err := failoverFor(b, t, log); err != nil {
			log.Warn("no failover", "err", err)
		} else if fo != nil {
			fmt.Printf("  failover      within location %s\n", fo.Location)
			go fo.Run(ctx)
		}
	}
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return tunnel.Close()
		case <-tick.C:
			// Without a handshake for 3 minutes the gateway is not answering:
			// say so once instead of failing silently.
			hs := tunnel.LastHandshake()
			if stale := hs.IsZero() || time.Since(hs) > 3*time.Minute; stale && !warned {
				log.Warn("no recent handshake with the gateway; is it up, and is this device still active?")
				warned = true
			} else if !stale {
				warned = false
			}
		}
	}
}

// Comment lines that 'meridian device add' writes into a config with a
// location, for failover; WireGuard apps ignore them.
const (
	metaLocation = "# Meridian-Location = "
	metaControl  = "# Meridian-Control = "
	metaCA       = "# Meridian-CA-SHA256 = "
)

// failoverFor reads the Meridian comment lines of a config and returns a
// Failover for the tunnel, or nil if the config names no location.
func failoverFor(conf []byte, t *client.Tunnel, log *slog.Logger) (*client.Failover, error) {
	meta := map[string]string{}
	for _, line := range strings.Split(string(conf), "\n") {
		line = strings.TrimSpace(line)
		for _, k := range []string{metaLocation, metaControl, metaCA} {
			if v, ok := strings.CutPrefix(line, k); ok {
				meta[k] = strings.TrimSpace(v)
			}
		}
	}
	if meta[metaLocation] == "" || meta[metaControl] == "" {
		return nil, nil
	}
	servers, err := api.NewClient(meta[metaControl], "", meta[metaCA])
	if err != nil {
		return nil, err
	}
	return &client.Failover{Tunnel: t, Servers: servers, Location: meta[metaLocation], Logger: log}, nil
}
