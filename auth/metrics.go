package auth

import "github.com/prometheus/client_golang/prometheus"

// metrics exports a TokenSource's state:
//
//	blobfs_auth_token_expiry_seconds{scope}      seconds until the cached token expires (negative once expired)
//	blobfs_auth_token_refreshes_total{result}    refresh attempts, result="success" or "failure"
//
// The expiry gauge is computed at scrape time, so it is exact without a
// background goroutine.
type metrics struct {
	src       *TokenSource
	expiry    *prometheus.Desc
	refreshes *prometheus.CounterVec
}

func newMetrics(src *TokenSource) *metrics {
	m := &metrics{
		src: src,
		expiry: prometheus.NewDesc("blobfs_auth_token_expiry_seconds",
			"Seconds until the cached storage token expires (negative once expired).", []string{"scope"}, nil),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobfs_auth_token_refreshes_total",
			Help: "Token refresh attempts by result (success, failure).",
		}, []string{"result"}),
	}
	// Both series exist from the start, so a rate() over failures works
	// before the first failure.
	m.refreshes.WithLabelValues("success")
	m.refreshes.WithLabelValues("failure")
	src.metrics = m
	return m
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.expiry
	m.refreshes.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for scope, secs := range m.src.expiries() {
		ch <- prometheus.MustNewConstMetric(m.expiry, prometheus.GaugeValue, secs, scope)
	}
	m.refreshes.Collect(ch)
}

func (m *metrics) refreshed(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.refreshes.WithLabelValues("success").Inc()
	} else {
		m.refreshes.WithLabelValues("failure").Inc()
	}
}
