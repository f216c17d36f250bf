package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.zx2c4.com/wireguard/device"

	"github.com/meridian-vpn/meridian/api"
)

// rejectAfter is WireGuard's Reject-After-Time: a peer without a handshake
// for this long has no live session.
const rejectAfter = 180 * time.Second

// Load reads aggregate figures from the WireGuard device: nothing per peer
// leaves this function.
func (g *Gateway) Load() api.GatewayReport {
	var r api.GatewayReport
	out, err := g.dev.IpcGet()
	if err != nil {
		return r
	}
	now := time.Now()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			r.Peers++
		case "last_handshake_time_sec":
			if sec, _ := strconv.ParseInt(v, 10, 64); sec > 0 && now.Sub(time.Unix(sec, 0)) < rejectAfter {
				r.ActivePeers++
			}
		case "rx_bytes":
			n, _ := strconv.ParseUint(v, 10, 64)
			r.RxBytes += n
		case "tx_bytes":
			n, _ := strconv.ParseUint(v, 10, 64)
			r.TxBytes += n
		}
	}
	r.Version = g.NetmapVersion()
	return r
}

// underLoadSample is how often the device is asked whether it is rate-limiting
// handshakes; wireguard-go stays in that mode for a second after the
// handshake queue was last found long, so no episode is missed.
const underLoadSample = 250 * time.Millisecond

func (g *Gateway) reportLoop(ctx context.Context) {
	defer g.done.Done()
	t := time.NewTicker(g.cfg.ReportInterval)
	defer t.Stop()
	sample := time.NewTicker(underLoadSample)
	defer sample.Stop()
	var counters api.GatewayCounters
	underLoad := false
	for {
		load := g.Load()
		if g.cfg.Clock != nil {
			st := g.cfg.Clock.State()
			load.Time = &st
		}
		if g.exit != nil {
			counters.EgressDenied = g.exit.Stats().Denied
		}
		c := counters
		load.Counters = &c
		if g.spool != nil {
			held, err := g.heldRecords()
			if err != nil {
				g.log.Error("reading the records held for the report", "err", err)
			}
			load.Records = held
		}
		g.lastLoad.Store(&load)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		reply, err := g.client.ReportWithReply(rctx, load)
		cancel()
		if err != nil && ctx.Err() == nil {
			g.log.Debug("report failed", "err", err)
		}
		if err == nil && g.spool != nil {
			if err := g.applyReportReply(reply); err != nil {
				g.log.Error("set-aside session records", "err", err)
			}
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				break wait
			case <-sample.C:
				limiting := g.dev.IsUnderLoad()
				if limiting && !underLoad {
					counters.UnderLoad++
				}
				underLoad = limiting
			}
		}
	}
}

// metrics are aggregate only: no label names a peer, key or address.
type metrics struct {
	reg *prometheus.Registry
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	// Figures read from the device come from the report loop's last
	// reading, so a scrape costs nothing even with many peers.
	load := func() api.GatewayReport {
		if r := g.lastLoad.Load(); r != nil {
			return *r
		}
		return api.GatewayReport{}
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		gauge("meridian_gateway_peers", "Peers installed in the WireGuard device.", func() float64 { return float64(g.Peers()) }),
		gauge("meridian_gateway_active_peers", "Peers with a handshake in the last 180 s.", func() float64 { return float64(load().ActivePeers) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gateway_rx_bytes_total", Help: "Bytes received from peers (current peers)."}, func() float64 { return float64(load().RxBytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gateway_tx_bytes_total", Help: "Bytes sent to peers (current peers)."}, func() float64 { return float64(load().TxBytes) }),
		gauge("meridian_gateway_netmap_version", "Version of the applied netmap.", func() float64 { return float64(g.NetmapVersion()) }),
		gauge("meridian_gateway_control_connected", "1 while the control server answers.", func() float64 {
			if g.Connected() {
				return 1
			}
			return 0
		}),
	)
	if g.cfg.Clock != nil {
		m.reg.MustRegister(g.cfg.Clock)
	}
	// Session records: aggregate only, as everything here.
	m.reg.MustRegister(
		g.sessions.refused,
		gauge("meridian_gateway_sessions_open", "Open sessions of peers owing session records.", func() float64 { return float64(g.sessions.openCount()) }),
		gauge("meridian_gateway_session_blocks_free", "Source port blocks that no session holds.", func() float64 { return float64(g.sessions.freeBlocks()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gateway_session_rounds_total", Help: "Rounds of the session loop (each reads the device for handshakes when a peer owes records)."}, func() float64 { return float64(g.sessionRounds.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gateway_sessions_opened_total", Help: "Sessions opened (each with a port block and a record)."}, func() float64 { return float64(g.sessions.opened.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gateway_session_packets_dropped_total", Help: "Packets of peers owing session records dropped because their session had no port block."}, func() float64 { return float64(g.attr.dropped.Load()) }),
		gauge("meridian_gateway_session_spool_bytes", "Bytes of session records not yet taken by the control server.", func() float64 { return float64(g.spool.pending()) }),
		gauge("meridian_gateway_session_spool_limit_bytes", "Limit of the session record spool; new sessions are refused beyond it.", func() float64 { return float64(g.cfg.SpoolLimit) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gateway_session_records_sent_total", Help: "Session records taken by the control server."}, func() float64 { return float64(g.recordsSent.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gateway_session_records_refused_total", Help: "Session records the control server refused as wrong, set aside in the state directory's " + refusedFile + "."}, func() float64 { return float64(g.recordsRefused.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gateway_session_records_no_duty_total", Help: "Session records the control server took but did not store as no duty required them, set aside in the state directory's " + refusedFile + "."}, func() float64 { return float64(g.recordsNoDuty.Load()) }),
	)
	if g.exit != nil {
		m.reg.MustRegister(
			gauge("meridian_exit_tcp_open", "Forwarded TCP connections open.", func() float64 { return float64(g.exit.Stats().TCPOpen) }),
			gauge("meridian_exit_udp_open", "Forwarded UDP flows open.", func() float64 { return float64(g.exit.Stats().UDPOpen) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_exit_denied_total", Help: "Flows refused by the egress policy."}, func() float64 { return float64(g.exit.Stats().Denied) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_exit_cap_hit_total", Help: "Flows refused by the connection caps."}, func() float64 { return float64(g.exit.Stats().CapHit) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_exit_unattributed_total", Help: "Flows of recorded sessions refused for want of a free source port of their block."}, func() float64 { return float64(g.exit.Stats().Unattributed) }),
		)
	}
	return m
}

// MetricsHandler serves the gateway's Prometheus metrics.
func (g *Gateway) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{})
}

// addrRE matches IPv4 and IPv6 literals (with optional port), which
// wireguard-go's messages may carry: endpoints of peers are personal data
// and never reach our logs.
var addrRE = regexp.MustCompile(`\[?[0-9a-fA-F]*:[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\]?(:\d+)?|\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`)

func redact(s string) string { return addrRE.ReplaceAllString(s, "<addr>") }

// wgLogger passes wireguard-go's errors to slog with addresses removed and
// drops its verbose log, which names peers and endpoints.
func wgLogger(l interface {
	Warn(msg string, args ...any)
}) *device.Logger {
	return &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf: func(format string, args ...any) {
			l.Warn("wireguard", "msg", redact(fmt.Sprintf(format, args...)))
		},
	}
}
