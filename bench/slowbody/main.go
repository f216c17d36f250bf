// Command slowbody floods an HTTP server on loopback with slow request
// bodies (headers, then a byte every interval) from many loopback source
// addresses, and meanwhile measures a health URL and, through a SOCKS5
// proxy such as 'meridian connect', new connections to a local web server:
// what docs/benchmarks.md reports for the control API. Loopback only:
// target and sources must be 127.0.0.0/8 addresses. Everything is bounded
// by -conns and -duration.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meridian-vpn/meridian/internal/slowbody"
)

func main() {
	target := flag.String("target", "127.0.0.1:8420", "host:port of the server (loopback)")
	path := flag.String("path", "/api/v1/gateways/join", "path of the slow POSTs")
	conns := flag.Int("conns", 20000, "slow connections to keep open")
	first := flag.String("source", "127.0.0.2", "first loopback source address")
	nsrc := flag.Int("sources", 1, "number of consecutive source addresses, from -source")
	every := flag.Duration("every", 2*time.Second, "one body byte per interval")
	duration := flag.Duration("duration", 60*time.Second, "how long the flood lasts")
	reopen := flag.Duration("reopen", time.Second, "open a new slow connection this long after the server closed one (0: do not)")
	health := flag.String("health", "http://127.0.0.1:8420/api/v1/health", "URL to probe during the flood (empty: none)")
	socks := flag.String("socks", "", "SOCKS5 proxy (meridian connect --socks5) to probe a local web server through (empty: none)")
	probeEvery := flag.Duration("probe-every", time.Second, "probe interval")
	flag.Parse()

	srcs, err := sources(*first, *nsrc)
	if err != nil {
		fail(err)
	}
	if ap, err := netip.ParseAddrPort(*target); err != nil || !ap.Addr().IsLoopback() {
		fail(fmt.Errorf("-target %q: a loopback host:port is required", *target))
	}
	if *conns <= 0 || *conns > 100000 || *duration <= 0 || *duration > 30*time.Minute {
		fail(fmt.Errorf("-conns must be 1..100000 and -duration at most 30m"))
	}
	raiseFiles(uint64(*conns) + 4096)

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var wg sync.WaitGroup
	var st floodStats
	slots := make(chan struct{}, *conns)
	for range *conns {
		slots <- struct{}{}
	}
	// Openers: each takes a slot, holds a slow connection until the server
	// closes it, and (with -reopen) gives the slot back for another.
	for w := range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 256 {
				select {
				case <-ctx.Done():
					return
				case <-slots:
				}
				c, err := slowbody.Open(srcs[i%len(srcs)], *target, *path, *every, time.Until(deadline(ctx)))
				if err != nil {
					st.dialErrs.Add(1)
					giveBack(ctx, slots, *reopen)
					continue
				}
				st.opened.Add(1)
				st.open.Add(1)
				go func() {
					<-c.Closed()
					st.open.Add(-1)
					c.Close()
					if ctx.Err() == nil {
						st.closed.Add(1)
						giveBack(ctx, slots, *reopen)
					}
				}()
			}
		}()
	}

	var healthP, tunnelP probes
	if *health != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			healthP.run(ctx, *probeEvery, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, *health)
		}()
	}
	if *socks != "" {
		web, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail(err)
		}
		go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello through the tunnel\n") }))
		proxy, _ := url.Parse("socks5://" + *socks)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tunnelP.run(ctx, *probeEvery, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy), DisableKeepAlives: true}}, "http://"+web.Addr().String()+"/")
		}()
	}

	start := time.Now()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			fmt.Printf("t=%3.0fs open=%d opened=%d closed_by_server=%d dial_errors=%d health=%s tunnel=%s\n", time.Since(start).Seconds(),
				st.open.Load(), st.opened.Load(), st.closed.Load(), st.dialErrs.Load(), healthP.summary(), tunnelP.summary())
		}
	}
	wg.Wait()
	fmt.Printf("\nflood: %d slow connections opened over %s from %d sources, %d closed by the server, %d dial errors\n",
		st.opened.Load(), *duration, len(srcs), st.closed.Load(), st.dialErrs.Load())
	fmt.Printf("health probes: %s\n", healthP.summary())
	fmt.Printf("tunnel probes: %s\n", tunnelP.summary())
}

// giveBack returns a slot for a new connection after delay (never, if 0).
func giveBack(ctx context.Context, slots chan<- struct{}, delay time.Duration) {
	if delay <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(delay):
		slots <- struct{}{}
	}
}

type floodStats struct {
	opened, closed, dialErrs atomic.Int64
	open                     atomic.Int64
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// probes records the latency of GETs that answered 200, and the failures.
type probes struct {
	mu     sync.Mutex
	ok     []time.Duration
	failed int
}

func (p *probes) run(ctx context.Context, every time.Duration, hc *http.Client, u string) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		resp, err := hc.Get(u)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		p.mu.Lock()
		if err == nil && resp.StatusCode == http.StatusOK {
			p.ok = append(p.ok, time.Since(start))
		} else {
			p.failed++
		}
		p.mu.Unlock()
	}
}

func (p *probes) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ok) == 0 && p.failed == 0 {
		return "-"
	}
	s := slices.Clone(p.ok)
	slices.Sort(s)
	q := func(f float64) time.Duration {
		if len(s) == 0 {
			return 0
		}
		return s[int(f*float64(len(s)-1))].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("%d ok (p50 %s, p99 %s, max %s) %d failed", len(s), q(0.5), q(0.99), q(1), p.failed)
}

func sources(first string, n int) ([]string, error) {
	a, err := netip.ParseAddr(first)
	if err != nil || !a.Is4() || !a.IsLoopback() || n < 1 || n > 65536 {
		return nil, fmt.Errorf("-source %q -sources %d: want a 127.0.0.0/8 address and 1..65536 sources", first, n)
	}
	var out []string
	for range n {
		if !a.IsLoopback() {
			return nil, fmt.Errorf("-sources %d from %s leave 127.0.0.0/8", n, first)
		}
		out = append(out, a.String())
		a = a.Next()
	}
	return out, nil
}

// raiseFiles raises this process's open files limit to n, soft and hard
// (the hard limit only as root), or as far as it goes.
func raiseFiles(n uint64) {
	var r syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	want := syscall.Rlimit{Cur: max(r.Cur, n), Max: max(r.Max, n)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		want = syscall.Rlimit{Cur: r.Max, Max: r.Max}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	}
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	if r.Cur < n {
		fmt.Fprintf(os.Stderr, "slowbody: open files limit %d is below the %d needed\n", r.Cur, n)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "slowbody:", err)
	os.Exit(2)
}
