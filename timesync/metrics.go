package timesync

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-vpn/meridian/api"
)

// Metrics of a Monitor. The only label values are NTP server names and
// alarm kinds: nothing about users.
var (
	requiredDesc     = prometheus.NewDesc("meridian_time_required", "1 when a clock-sync duty applies to this node.", nil, nil)
	syncedDesc       = prometheus.NewDesc("meridian_time_synced", "1 while a source answered recently and the offset is within the bound.", nil, nil)
	alarmDesc        = prometheus.NewDesc("meridian_time_alarm", "1 while the clock alarm of this kind is raised.", []string{"kind"}, nil)
	maxOffsetDesc    = prometheus.NewDesc("meridian_time_max_offset_seconds", "The bound on the clock offset.", nil, nil)
	offsetDesc       = prometheus.NewDesc("meridian_time_offset_seconds", "The source's clock minus this node's, from its last usable answer.", []string{"source"}, nil)
	delayDesc        = prometheus.NewDesc("meridian_time_delay_seconds", "Round-trip delay to the source, from its last usable answer.", []string{"source"}, nil)
	lastSuccessDesc  = prometheus.NewDesc("meridian_time_last_success_timestamp_seconds", "When the source last answered usably (Unix time).", []string{"source"}, nil)
	kernelSyncedDesc = prometheus.NewDesc("meridian_time_kernel_synced", "1 when the kernel says a time daemon disciplines the clock.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Monitor) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{requiredDesc, syncedDesc, alarmDesc, maxOffsetDesc, offsetDesc, delayDesc, lastSuccessDesc, kernelSyncedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector with the monitor's State.
func (m *Monitor) Collect(ch chan<- prometheus.Metric) {
	st := m.State()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(requiredDesc, one(st.Required))
	gauge(syncedDesc, one(st.Synced()))
	for _, kind := range []api.TimeState{api.TimeOffsetAlarm, api.TimeNoSource} {
		gauge(alarmDesc, one(st.State == kind), Alarm(kind))
	}
	if st.Trace != nil {
		for _, kind := range []string{"deviation", "no-reference"} {
			gauge(alarmDesc, one(st.Trace.Alarm == kind), kind)
		}
	}
	gauge(maxOffsetDesc, st.MaxOffset.Seconds())
	for _, s := range st.Sources {
		if s.LastSuccess.IsZero() {
			continue
		}
		gauge(offsetDesc, s.Offset.Seconds(), s.Source)
		gauge(delayDesc, s.Delay.Seconds(), s.Source)
		gauge(lastSuccessDesc, float64(s.LastSuccess.UnixNano())/float64(time.Second), s.Source)
	}
	if st.Kernel.Known {
		gauge(kernelSyncedDesc, one(st.Kernel.Synced))
	}
}

func one(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
