package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/meridian-vpn/meridian/client"
	"github.com/meridian-vpn/meridian/wg"
)

func runConnect(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	config := fs.String("config", "", "WireGuard config file (wg-quick format), as written by 'meridian device add --out'")
	socks := fs.String("socks5", "127.0.0.1:1080", "SOCKS5 proxy listen address (\"\" for none)")
	httpAddr := fs.String("http", "", "HTTP proxy listen address (CONNECT and plain http://), e.g. 127.0.0.1:8080")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *config == "" {
		return usageError{errors.New("connect: --config FILE is required")}
	}
	if *socks == "" && *httpAddr == "" {
		return usageError{errors.New("connect: give --socks5 and/or --http: without a proxy the tunnel would carry nothing")}
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
	t, err := client.Start(cfg, client.Options{SOCKS5: *socks, HTTP: *httpAddr, Logger: log})
	if err != nil {
		return err
	}
	defer t.Close()
	fmt.Printf("tunnel up to %s\n", cfg.Peers[0].Endpoint)
	if a := t.SOCKS5Addr(); a != nil {
		fmt.Printf("  SOCKS5 proxy  %s   (curl --proxy socks5h://%s ...)\n", a, a)
	}
	if a := t.HTTPAddr(); a != nil {
		fmt.Printf("  HTTP proxy    %s   (curl --proxy http://%s ...)\n", a, a)
	}
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			// Without a handshake for 3 minutes the gateway is not answering:
			// say so once instead of failing silently.
			hs := t.LastHandshake()
			if stale := hs.IsZero() || time.Since(hs) > 3*time.Minute; stale && !warned {
				log.Warn("no recent handshake with the gateway; is it up, and is this device still active?")
				warned = true
			} else if !stale {
				warned = false
			}
		}
	}
}
