package bench

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/client"
	"github.com/meridian-vpn/meridian/control"
	"github.com/meridian-vpn/meridian/gateway"
	"github.com/meridian-vpn/meridian/wg"
)

// startControl runs a real control server (SQLite on disk) on loopback and
// returns an admin client.
func startControl(b *testing.B, dir string) (*control.Server, string, *api.Client) {
	srv, url, admin, stop := serveControl(b, dir)
	b.Cleanup(stop)
	return srv, url, admin
}

// serveControl is startControl with the stop left to the caller (stop
// waits until the server has closed its database).
func serveControl(b *testing.B, dir string) (srv *control.Server, url string, admin *api.Client, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := control.New(ctx, control.Config{DataDir: dir, IPv4Pool: netip.MustParsePrefix("10.200.0.0/16"),
		IPv6Pool: netip.MustParsePrefix("2001:db8:200::/64"), Logger: quiet()})
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l, nil) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; srv.Close() }) }
	tok, err := srv.CreateAdminToken(ctx, "bench")
	if err != nil {
		stop()
		b.Fatal(err)
	}
	url = control.URLFor(l)
	if admin, err = api.NewClient(url, tok, ""); err != nil {
		stop()
		b.Fatal(err)
	}
	return srv, url, admin, stop
}

// BenchmarkDeviceCreate: device creations through the HTTP API, one client,
// each durably committed before the answer (reported as devices/s).
func BenchmarkDeviceCreate(b *testing.B) {
	_, _, admin := startControl(b, b.TempDir())
	ctx := context.Background()
	if _, err := admin.CreateUser(ctx, api.CreateUserRequest{Name: "bench"}); err != nil {
		b.Fatal(err)
	}
	keys := make([]wg.Key, b.N)
	for i := range keys {
		k, _ := wg.NewPrivateKey()
		keys[i] = k.Public()
	}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "bench", Name: "d" + itoa(i), PublicKey: &keys[i]}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "devices/s")
}

func itoa(i int) string { return string(appendInt(nil, i)) }

func appendInt(b []byte, i int) []byte {
	if i >= 10 {
		b = appendInt(b, i/10)
	}
	return append(b, byte('0'+i%10))
}

// BenchmarkDeviceToHandshake: from 'device add' (API call) to the first
// completed WireGuard handshake of that device through a running gateway.
func BenchmarkDeviceToHandshake(b *testing.B) {
	dir := b.TempDir()
	_, url, admin := startControl(b, filepath.Join(dir, "control"))
	ctx := context.Background()
	tok, err := admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	if err != nil {
		b.Fatal(err)
	}
	gw, err := gateway.Start(ctx, gateway.Config{Control: url, JoinToken: tok.Token, StateDir: filepath.Join(dir, "gw"),
		Name: "gw", ListenPort: freeUDPPort(b), Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer gw.Close()
	admin.CreateUser(ctx, api.CreateUserRequest{Name: "bench"})
	var lat []time.Duration
	for i := range b.N {
		priv, _ := wg.NewPrivateKey()
		pub := priv.Public()
		start := time.Now()
		resp, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{User: "bench", Name: "h" + itoa(i), PublicKey: &pub})
		if err != nil {
			b.Fatal(err)
		}
		tun, err := client.Start(resp.Config(priv), client.Options{Logger: quiet()})
		if err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for tun.LastHandshake().IsZero() {
			if time.Now().After(deadline) {
				b.Fatal("no handshake within 30 s")
			}
			time.Sleep(200 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
		tun.Close()
	}
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.9), "p90-ms")
	b.ReportMetric(ms(1), "max-ms")
}
