package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Prefetch is the Prometheus view of prefetching: how often it runs and
// how long it takes from trigger to complete, by trigger; how many bytes
// it fetched; and how many of those were evicted before anyone read them
// (the waste, which says when automatic prefetch guesses wrong or the
// cache is too small for what is warmed). A nil *Prefetch records nothing.
type Prefetch struct {
	ops     *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	bytes   *prometheus.CounterVec
}

// NewPrefetch registers the prefetch metrics on reg. fetched and wasted
// report the cache's running totals of bytes prefetch fetched and of
// those evicted unread (cache.Cache.PrefetchStats).
func NewPrefetch(reg prometheus.Registerer, fetched, wasted func() uint64) (*Prefetch, error) {
	if reg == nil {
		return nil, nil
	}
	p := &Prefetch{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobfs_prefetch_operations_total",
			Help: "Prefetch operations finished, by trigger (request, checkpoint, auto_checkpoint, auto_shards) and result (ok, error, canceled).",
		}, []string{"trigger", "result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "blobfs_prefetch_duration_seconds",
			Help:    "Time from a prefetch's trigger (request received, marker read) to its completion, by trigger.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 14),
		}, []string{"trigger"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobfs_prefetch_planned_bytes_total",
			Help: "Bytes prefetch operations made sure were cached (fetched or found cached), by trigger.",
		}, []string{"trigger"}),
	}
	cs := []prometheus.Collector{p.ops, p.seconds, p.bytes,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "blobfs_prefetch_fetched_bytes_total",
			Help: "Bytes prefetch fetched from the backend into the cache.",
		}, func() float64 { return float64(fetched()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "blobfs_prefetch_wasted_bytes_total",
			Help: "Bytes prefetch fetched that were evicted before any read (prefetched-then-evicted-unread).",
		}, func() float64 { return float64(wasted()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Observe records one finished prefetch.
func (p *Prefetch) Observe(trigger, result string, d time.Duration, bytes int64) {
	if p == nil {
		return
	}
	p.ops.WithLabelValues(trigger, result).Inc()
	p.seconds.WithLabelValues(trigger).Observe(d.Seconds())
	if bytes > 0 {
		p.bytes.WithLabelValues(trigger).Add(float64(bytes))
	}
}
