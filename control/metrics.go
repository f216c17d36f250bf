package control

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are aggregate figures only: no label ever names a user, device,
// key or address.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec // by method and status code class
	authFailures prometheus.Counter
	joinFailures prometheus.Counter
	netmapFull   prometheus.Counter
	netmapDeltas prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_control_http_requests_total", Help: "API requests by method and status class.",
		}, []string{"method", "code"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_auth_failures_total", Help: "Requests with an invalid or revoked token."}),
		joinFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_join_failures_total", Help: "Refused gateway joins."}),
		netmapFull:   prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_netmap_full_total", Help: "Full netmaps sent to gateways."}),
		netmapDeltas: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_control_netmap_deltas_total", Help: "Netmap deltas sent to gateways."}),
	}
	count := func(name, help, q string) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var n float64
			s.db.QueryRowContext(ctx, q).Scan(&n)
			return n
		})
	}
	m.reg.MustRegister(m.requests, m.authFailures, m.joinFailures, m.netmapFull, m.netmapDeltas,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		count("meridian_users", "Accounts.", `SELECT count(*) FROM users`),
		count("meridian_devices_active", "Active devices.", `SELECT count(*) FROM devices WHERE status = 'active'`),
		count("meridian_devices_revoked", "Revoked devices.", `SELECT count(*) FROM devices WHERE status = 'revoked'`),
		count("meridian_gateways", "Joined gateways.", `SELECT count(*) FROM gateways`),
		count("meridian_netmap_version", "Newest netmap version.", `SELECT coalesce(max(version), 0) FROM peer_changes`),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_gateways_healthy", Help: "Gateways heard from within the heartbeat timeout."}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			n := 0
			for _, st := range s.status {
				if time.Since(st.lastSeen) < s.cfg.HeartbeatTimeout {
					n++
				}
			}
			return float64(n)
		}),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

var codeClass = [...]string{"1xx", "1xx", "2xx", "3xx", "4xx", "5xx"}

func (m *metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		c := rec.code / 100
		if c < 1 || c > 5 {
			c = 5
		}
		method := r.Method
		switch method {
		case "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD":
		default:
			method = "other"
		}
		m.requests.WithLabelValues(method, codeClass[c]).Inc()
	})
}
