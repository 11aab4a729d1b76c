package azurite

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Counter is a reverse proxy on a free loopback port in front of a Server
// that counts what passes through it: every request, and separately the
// blob reads (GETs of a blob, ranged or whole) with the body bytes they
// returned. Tests point a mount at it to assert what reached the backend
// ("a second read costs zero requests", "random reads pull at most 8 MiB").
// Clients talk plain HTTP to it, whatever the Server speaks.
type Counter struct {
	ln       net.Listener
	srv      *http.Server
	upstream *http.Transport

	mu sync.Mutex
	c  Counts // GUARDED_BY(mu)
	// hold, if set, keeps the blob reads it matches waiting (Hold).
	hold *hold // GUARDED_BY(mu)
}

type hold struct {
	match   func(*http.Request) bool
	release chan struct{}
	// any: match sees every request (HoldRequests), not only blob reads.
	any bool
}

// Counts is what a Counter has seen since it started or was last Reset.
type Counts struct {
	// Requests is every request, of any kind.
	Requests int64
	// Reads is the GETs of blobs (not listings, properties or container
	// operations); ReadBytes the body bytes they returned.
	Reads, ReadBytes int64
	// ByMethod counts requests by HTTP method.
	ByMethod map[string]int64
}

func (c Counts) String() string {
	return fmt.Sprintf("%d requests %v, %d blob reads of %d bytes", c.Requests, c.ByMethod, c.Reads, c.ReadBytes)
}

// NewCounter starts a counting proxy in front of s. Close it when done.
func NewCounter(s *Server) (*Counter, error) {
	target, err := url.Parse(s.BlobEndpoint())
	if err != nil {
		return nil, fmt.Errorf("azurite: counter: %w", err)
	}
	target.Path = "" // requests already carry /devstoreaccount1/...
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("azurite: counter: %w", err)
	}
	c := &Counter{ln: ln, upstream: s.Transport()}
	c.c.ByMethod = map[string]int64{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// Azurite compares the Host with copy-source URLs, which name
			// the proxy.
			r.Out.Host = r.In.Host
		},
		Transport: c.upstream,
	}
	c.srv = &http.Server{Handler: c.handler(rp), ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

// NewCounterT starts a counter for a test and closes it when the test ends.
func NewCounterT(t testing.TB, s *Server) *Counter {
	t.Helper()
	c, err := NewCounter(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// BlobEndpoint is the account URL through the counter, e.g.
// http://127.0.0.1:40002/devstoreaccount1.
func (c *Counter) BlobEndpoint() string {
	return fmt.Sprintf("http://%s/%s", c.ln.Addr(), Account)
}

// Counts returns a copy of the counts so far.
func (c *Counter) Counts() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.c
	out.ByMethod = make(map[string]int64, len(c.c.ByMethod))
	for k, v := range c.c.ByMethod {
		out.ByMethod[k] = v
	}
	return out
}

// Reset sets every count to zero. Requests still in flight when Reset is
// called are counted afterwards.
func (c *Counter) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c = Counts{ByMethod: map[string]int64{}}
}

// Close stops the counter.
func (c *Counter) Close() error {
	err := c.srv.Close()
	c.upstream.CloseIdleConnections()
	return err
}

// Hold keeps every blob read that match accepts waiting, counted but not
// forwarded, until release is called (or the request is cancelled): a test
// keeps a fetch in flight while it checks what waits for it. release may
// be called more than once.
func (c *Counter) Hold(match func(*http.Request) bool) (release func()) {
	return c.hold1(&hold{match: match, release: make(chan struct{})})
}

// HoldRequests is Hold for every request match accepts, of any kind: a
// test keeps a lookup (HEAD, listing) in flight.
func (c *Counter) HoldRequests(match func(*http.Request) bool) (release func()) {
	return c.hold1(&hold{match: match, release: make(chan struct{}), any: true})
}

func (c *Counter) hold1(h *hold) (release func()) {
	c.mu.Lock()
	c.hold = h
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			if c.hold == h {
				c.hold = nil
			}
			c.mu.Unlock()
			close(h.release)
		})
	}
}

// isBlobRead reports whether r reads a blob's content: a GET of
// /account/container/name with no comp= or restype= (those list, or get
// properties, tags, block lists).
func isBlobRead(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	q := r.URL.Query()
	if q.Has("comp") || q.Has("restype") {
		return false
	}
	// /account/container/blob...: at least three segments.
	return strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 2
}

func (c *Counter) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		read := isBlobRead(r)
		cw := &countingWriter{ResponseWriter: w}
		// Count before forwarding: a test that reads its counts right
		// after its own request returns must see it.
		c.mu.Lock()
		c.c.Requests++
		c.c.ByMethod[r.Method]++
		if read {
			c.c.Reads++
		}
		h := c.hold
		c.mu.Unlock()
		if h != nil && (read || h.any) && h.match(r) {
			select {
			case <-h.release:
			case <-r.Context().Done():
				return
			}
		}
		next.ServeHTTP(cw, r)
		if read {
			c.mu.Lock()
			c.c.ReadBytes += cw.n
			c.mu.Unlock()
		}
	})
}

// countingWriter counts the body bytes written through it.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Flush lets the reverse proxy stream bodies through.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
