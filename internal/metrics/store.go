// Package metrics instruments blobfs for Prometheus: every backend request
// (count, latency, errors by kind, bytes) through a blob.Store wrapper, and
// the HTTP endpoint that serves them.
package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/blobfs/blobfs/blob"
)

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Serve serves /metrics on addr until ctx ends. It returns once listening,
// so a bad address fails the mount instead of being logged later. With
// profiling, Go's /debug/pprof/ handlers are served too (a diagnostic:
// profiles name internal functions, never data or secrets).
func Serve(ctx context.Context, addr string, g prometheus.Gatherer, profiling bool) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	if profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go srv.Serve(ln)
	return ln.Addr(), nil
}

type storeMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
}

// InstrumentStore wraps s so every request is counted by operation and
// result, timed, and its payload bytes added up. A nil registerer returns s.
func InstrumentStore(s blob.Store, reg prometheus.Registerer) blob.Store {
	if reg == nil {
		return s
	}
	m := &storeMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobfs_backend_requests_total",
			Help: "Blob storage operations by operation and result (ok, not_found, stale, exists, permission, throttled, unavailable, checksum, canceled, error).",
		}, []string{"op", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "blobfs_backend_request_seconds",
			Help:    "Latency of blob storage operations, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobfs_backend_bytes_total",
			Help: "Payload bytes moved to and from blob storage.",
		}, []string{"direction"}),
	}
	reg.MustRegister(m.requests, m.latency, m.bytes)
	return &instrumented{s: s, m: m}
}

// resultLabel classifies an error by the blob sentinels: a small, fixed
// label set, never the error text.
func resultLabel(err error) string {
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return "ok"
	case errors.Is(err, blob.ErrNotFound):
		return "not_found"
	case errors.Is(err, blob.ErrStale):
		return "stale"
	case errors.Is(err, blob.ErrExists):
		return "exists"
	case errors.Is(err, blob.ErrPermission):
		return "permission"
	case errors.Is(err, blob.ErrThrottled):
		return "throttled"
	case errors.Is(err, blob.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, blob.ErrChecksum):
		return "checksum"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "error"
}

type instrumented struct {
	s blob.Store
	m *storeMetrics
}

// track records one operation; deferred with &err so it sees the result.
func (i *instrumented) track(op string, start time.Time, errp *error) {
	i.observe(op, start, *errp)
}

func (i *instrumented) observe(op string, start time.Time, err error) {
	i.m.requests.WithLabelValues(op, resultLabel(err)).Inc()
	i.m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (i *instrumented) Stat(ctx context.Context, name string) (a blob.Attrs, err error) {
	defer i.track("stat", time.Now(), &err)
	return i.s.Stat(ctx, name)
}

func (i *instrumented) List(ctx context.Context, opts blob.ListOptions) (p blob.Page, err error) {
	defer i.track("list", time.Now(), &err)
	return i.s.List(ctx, opts)
}

func (i *instrumented) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (n int, err error) {
	start := time.Now()
	n, err = i.s.ReadAt(ctx, name, etag, p, off)
	i.observe("read", start, err)
	i.m.bytes.WithLabelValues("read").Add(float64(n))
	return n, err
}

// ReadAtV implements blob.VectorReader, counted as one read.
func (i *instrumented) ReadAtV(ctx context.Context, name string, etag blob.ETag, bufs [][]byte, off int64) (n int, err error) {
	start := time.Now()
	n, err = blob.ReadAtV(ctx, i.s, name, etag, bufs, off)
	i.observe("read", start, err)
	i.m.bytes.WithLabelValues("read").Add(float64(n))
	return n, err
}

func (i *instrumented) Put(ctx context.Context, name string, data []byte, opts blob.WriteOptions) (a blob.Attrs, err error) {
	start := time.Now()
	a, err = i.s.Put(ctx, name, data, opts)
	i.observe("put", start, err)
	if err == nil {
		i.m.bytes.WithLabelValues("write").Add(float64(len(data)))
	}
	return a, err
}

func (i *instrumented) StageBlock(ctx context.Context, name, id string, data []byte) (err error) {
	start := time.Now()
	err = i.s.StageBlock(ctx, name, id, data)
	i.observe("stage_block", start, err)
	if err == nil {
		i.m.bytes.WithLabelValues("write").Add(float64(len(data)))
	}
	return err
}

func (i *instrumented) CommitBlocks(ctx context.Context, name string, ids []string, opts blob.WriteOptions) (a blob.Attrs, err error) {
	defer i.track("commit", time.Now(), &err)
	return i.s.CommitBlocks(ctx, name, ids, opts)
}

func (i *instrumented) Blocks(ctx context.Context, name string) (b []blob.Block, err error) {
	defer i.track("block_list", time.Now(), &err)
	return i.s.Blocks(ctx, name)
}

func (i *instrumented) Delete(ctx context.Context, name string, cond blob.Conditions) (err error) {
	defer i.track("delete", time.Now(), &err)
	return i.s.Delete(ctx, name, cond)
}

func (i *instrumented) Copy(ctx context.Context, src string, srcETag blob.ETag, dst string, opts blob.WriteOptions) (a blob.Attrs, err error) {
	defer i.track("copy", time.Now(), &err)
	return i.s.Copy(ctx, src, srcETag, dst, opts)
}

func (i *instrumented) SetMetadata(ctx context.Context, name string, md map[string]string, cond blob.Conditions) (a blob.Attrs, err error) {
	defer i.track("set_metadata", time.Now(), &err)
	return i.s.SetMetadata(ctx, name, md, cond)
}
