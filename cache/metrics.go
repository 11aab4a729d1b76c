package cache

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are the process-local numbers behind Stats; always kept.
type counters struct {
	ramHits, diskHits, misses     atomic.Uint64
	fetches, fetchedBytes         atomic.Uint64
	diskReadBytes, diskWriteBytes atomic.Uint64
	evictions                     atomic.Uint64
	checksumFailures              atomic.Uint64
	writeFailures                 atomic.Uint64
	validations                   atomic.Uint64
	rangeHits, rangeMisses        atomic.Uint64
	backings                      atomic.Uint64
	backingWaits                  atomic.Uint64
}

// metrics are the Prometheus view of the same events. A nil *metrics (no
// Registerer) records nothing.
type metrics struct {
	hits             *prometheus.CounterVec
	misses           prometheus.Counter
	fetchedBytes     prometheus.Counter
	fetchSeconds     prometheus.Histogram
	evictions        prometheus.Counter
	checksumFailures prometheus.Counter
	writeFailures    prometheus.Counter
	backings         prometheus.Counter
	backingWaits     prometheus.Counter
}

const (
	tierRAM  = "ram"
	tierDisk = "disk"
	// tierRAMRange: a random read's range unit (ranges.go) found in RAM.
	tierRAMRange = "ram_range"
)

func newMetrics(reg prometheus.Registerer, diskUsed, diskBudget func() float64) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "blobfs", Subsystem: "cache", Name: "hits_total",
			Help: "Blocks served from the cache, by tier.",
		}, []string{"tier"}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blobfs", Subsystem: "cache", Name: "misses_total",
			Help: "Blocks a reader had to wait for from the backend.",
		}),
		fetchedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blobfs", Subsystem: "cache", Name: "fetched_bytes_total",
			Help: "Bytes read from the backend to fill the cache.",
		}),
		fetchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "blobfs", Subsystem: "cache", Name: "fetch_seconds",
			Help:    "Latency of one backend request (a run of blocks).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blobfs", Subsystem: "cache", Name: "evictions_total",
			Help: "Disk blocks evicted by this process.",
		}),
		checksumFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blobfs", Subsystem: "cache", Name: "checksum_failures_total",
			Help: "Disk blocks that failed verification and were dropped.",
		}),
		writeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blobfs", Subsystem: "cache", Name: "write_failures_total",
			Help: "Blocks that could not be stored on disk (full, I/O error); served from the backend instead.",
		}),
		backings: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blobfs", Subsystem: "cache", Name: "backing_opens_total",
			Help: "Fully cached objects handed out as leased local files for FUSE passthrough (blobfs_fuse_passthrough_opens_total counts the opens that used them).",
		}),
		backingWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "blobfs", Subsystem: "cache", Name: "backing_waits_total",
			Help: "Opens that waited for the fetches of the rest of the object (a warm-up's, another reader's) to finish, so that it could be handed to the kernel whole.",
		}),
	}
	cs := []prometheus.Collector{m.hits, m.misses, m.fetchedBytes, m.fetchSeconds, m.evictions, m.checksumFailures, m.writeFailures, m.backings, m.backingWaits}
	if diskUsed != nil {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "blobfs", Subsystem: "cache", Name: "disk_used_bytes",
				Help: "Bytes the disk tier occupies (all processes sharing the directory).",
			}, diskUsed),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "blobfs", Subsystem: "cache", Name: "disk_budget_bytes",
				Help: "The disk tier's budget.",
			}, diskBudget))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("cache: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) hit(tier string) {
	if m != nil {
		m.hits.WithLabelValues(tier).Inc()
	}
}

func (m *metrics) miss() {
	if m != nil {
		m.misses.Inc()
	}
}

func (m *metrics) fetched(d time.Duration, n int) {
	if m != nil {
		m.fetchSeconds.Observe(d.Seconds())
		m.fetchedBytes.Add(float64(n))
	}
}

func (m *metrics) evicted() {
	if m != nil {
		m.evictions.Inc()
	}
}

func (m *metrics) checksumFailed() {
	if m != nil {
		m.checksumFailures.Inc()
	}
}

func (m *metrics) writeFailed() {
	if m != nil {
		m.writeFailures.Inc()
	}
}

func (m *metrics) backingOpened() {
	if m != nil {
		m.backings.Inc()
	}
}

func (m *metrics) backingWaited() {
	if m != nil {
		m.backingWaits.Inc()
	}
}
