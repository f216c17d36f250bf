// Package bench holds Meridian's benchmarks. They are not tests: they print
// numbers, and docs/benchmarks.md records them with the command that
// produced them. Run: go test ./bench -run '^$' -bench . -benchtime 1x
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/wg"
)

// netmapServer stands in for the control server's gateway endpoints, so the
// peer benchmarks measure the gateway alone: it answers the join, hands out
// a prepared full netmap, and then whatever delta the benchmark pushes.
type netmapServer struct {
	full   api.Netmap
	deltas chan api.Netmap
}

func (s *netmapServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/gateways/join"):
		json.NewEncoder(w).Encode(api.JoinResponse{Name: "bench", Credential: "mrd-gw-bench",
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.200.0.1/16"), netip.MustParsePrefix("2001:db8:200::1/64")}})
	case strings.HasSuffix(r.URL.Path, "/gateway/netmap"):
		if r.URL.Query().Get("since") == "" {
			json.NewEncoder(w).Encode(s.full)
			return
		}
		select {
		case d := <-s.deltas:
			json.NewEncoder(w).Encode(d)
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
			json.NewEncoder(w).Encode(api.Netmap{Version: s.full.Version, Peers: []api.Peer{}})
		}
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func peers(b *testing.B, n int) []api.Peer {
	ps := make([]api.Peer, n)
	for i := range ps {
		k, err := wg.NewPrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		v4 := netip.AddrFrom4([4]byte{10, byte(201 + i>>16), byte(i >> 8), byte(i)})
		v6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})
		ps[i] = api.Peer{PublicKey: k.Public(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128)}}
	}
	return ps
}

func freeUDPPort(b *testing.B) int {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func startGateway(b *testing.B, ns *netmapServer) (*gateway.Gateway, *httptest.Server) {
	hs := httptest.NewServer(ns)
	gw, err := gateway.Start(context.Background(), gateway.Config{
		Control: hs.URL, JoinToken: "mrdjoin1.bench.0123456789abcdef0123." + strings.Repeat("00", 32),
		StateDir: b.TempDir(), Name: "bench", ListenPort: freeUDPPort(b), Logger: quiet(),
	})
	if err != nil {
		b.Fatal(err)
	}
	return gw, hs
}

func waitPeers(b *testing.B, gw *gateway.Gateway, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for gw.Peers() != n {
		if time.Now().After(deadline) {
			b.Fatalf("gateway holds %d peers, want %d", gw.Peers(), n)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// BenchmarkLoadPeers: time and memory for a new gateway to load N peers
// from its first (full) netmap.
func BenchmarkLoadPeers(b *testing.B) {
	for _, n := range []int{10_000, 50_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ns := &netmapServer{full: api.Netmap{Version: 1, Full: true, Peers: peers(b, n)}, deltas: make(chan api.Netmap)}
			for range b.N {
				before := heapInUse()
				start := time.Now()
				gw, hs := startGateway(b, ns)
				waitPeers(b, gw, n)
				elapsed := time.Since(start)
				b.ReportMetric(elapsed.Seconds(), "s/load")
				b.ReportMetric(float64(heapInUse()-before)/(1<<20), "MiB-heap")
				gw.Close()
				hs.Close()
			}
		})
	}
}

// BenchmarkAddPeerTo10k: time from a delta with one new peer leaving the
// control side until the gateway holding 10,000 peers has installed it.
func BenchmarkAddPeerTo10k(b *testing.B) {
	const n = 10_000
	ns := &netmapServer{full: api.Netmap{Version: 1, Full: true, Peers: peers(b, n)}, deltas: make(chan api.Netmap)}
	gw, hs := startGateway(b, ns)
	defer hs.Close()
	defer gw.Close()
	waitPeers(b, gw, n)
	extra := peers(b, b.N)
	b.ResetTimer()
	for i := range b.N {
		ns.deltas <- api.Netmap{Version: int64(2 + i), Peers: []api.Peer{extra[i]}}
		waitPeers(b, gw, n+i+1)
	}
	b.StopTimer() // closing a gateway with 10,000 peers is not part of the figure
}
