package azurite

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FaultProxy is a reverse proxy on a free loopback port in front of a
// Server. It forwards every request unchanged, except that it can answer
// the next requests with 503 Server Busy, exactly as Azure throttles, or
// flip a byte in the next response bodies. Clients talk plain HTTP to it,
// whatever the Server speaks.
type FaultProxy struct {
	target   *url.URL
	ln       net.Listener
	srv      *http.Server
	upstream *http.Transport

	requests atomic.Int64

	mu sync.Mutex
	// GUARDED_BY(mu)
	busy      int // requests still to answer with 503
	corrupt   int // response bodies still to corrupt
	corruptUp int // request bodies still to corrupt
	chaos     Chaos
	rng       *rand.Rand
	faults    Faults

	rp http.Handler // the reverse proxy proper
}

// NewFaultProxy starts a proxy in front of s. Close it when done.
func NewFaultProxy(s *Server) (*FaultProxy, error) {
	target, err := url.Parse(s.BlobEndpoint())
	if err != nil {
		return nil, fmt.Errorf("azurite: fault proxy: %w", err)
	}
	target.Path = "" // requests already carry /devstoreaccount1/...
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("azurite: fault proxy: %w", err)
	}
	p := &FaultProxy{target: target, ln: ln, upstream: s.Transport()}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// Keep the Host the client used: Azurite compares it with
			// copy-source URLs, which name the proxy.
			r.Out.Host = r.In.Host
		},
		Transport:      p.upstream,
		ModifyResponse: p.modifyResponse,
	}
	p.rp = rp
	p.srv = &http.Server{Handler: p.handler(rp), ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// NewFaultProxyT starts a proxy for a test and closes it when the test
// ends.
func NewFaultProxyT(t testing.TB, s *Server) *FaultProxy {
	t.Helper()
	p, err := NewFaultProxy(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// BlobEndpoint is the account URL through the proxy, e.g.
// http://127.0.0.1:40001/devstoreaccount1.
func (p *FaultProxy) BlobEndpoint() string {
	return fmt.Sprintf("http://%s/%s", p.ln.Addr(), Account)
}

// FailNext makes the next n requests (every attempt counts, retries
// included) answer 503 with error code ServerBusy, without reaching
// Azurite. Zero stops injecting.
func (p *FaultProxy) FailNext(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy = n
}

// CorruptNext flips one byte in the middle of each of the next n non-empty
// successful GET response bodies. Zero stops corrupting.
func (p *FaultProxy) CorruptNext(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.corrupt = n
}

// CorruptNextUpload flips one byte in the middle of each of the next n
// non-empty PUT request bodies before they reach Azurite, as a bad NIC or
// middlebox would. Zero stops corrupting.
func (p *FaultProxy) CorruptNextUpload(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.corruptUp = n
}

// Requests is how many requests have reached the proxy.
func (p *FaultProxy) Requests() int64 { return p.requests.Load() }

// Close stops the proxy.
func (p *FaultProxy) Close() error {
	err := p.srv.Close()
	p.upstream.CloseIdleConnections()
	return err
}

// forward passes one request on to Azurite.
func (p *FaultProxy) forward(w http.ResponseWriter, r *http.Request) { p.rp.ServeHTTP(w, r) }

func (p *FaultProxy) take(counter *int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if *counter <= 0 {
		return false
	}
	*counter--
	return true
}

func (p *FaultProxy) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if p.injectChaos(w, r) { // chaos.go
			return
		}
		if !p.take(&p.busy) {
			if r.Method == http.MethodPut && r.ContentLength > 0 && p.take(&p.corruptUp) {
				body, err := io.ReadAll(r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				if len(body) > 0 {
					body[len(body)/2] ^= 0x5a
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			next.ServeHTTP(w, r)
			return
		}
		// Read the request body as the service would, so the client sees
		// the 503 and not a reset connection.
		_, _ = io.Copy(io.Discard, r.Body)
		writeServerBusy(w, r)
	})
}

// writeServerBusy answers like Azure Storage does when it throttles.
func writeServerBusy(w http.ResponseWriter, r *http.Request) {
	const reqID = "00000000-0000-0000-0000-00000000b10b"
	body := fmt.Sprintf("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code>"+
		"<Message>The server is currently unable to receive requests. Please retry your request.\nRequestId:%s\nTime:%s</Message></Error>",
		reqID, time.Now().UTC().Format("2006-01-02T15:04:05.0000000Z"))
	h := w.Header()
	h.Set("Content-Type", "application/xml")
	h.Set("x-ms-error-code", "ServerBusy")
	h.Set("x-ms-request-id", reqID)
	h.Set("x-ms-version", r.Header.Get("x-ms-version"))
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusServiceUnavailable)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, body)
	}
}

func (p *FaultProxy) modifyResponse(resp *http.Response) error {
	if resp.Request.Method != http.MethodGet || resp.StatusCode/100 != 2 || resp.ContentLength == 0 {
		return nil
	}
	if !p.take(&p.corrupt) {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if len(body) > 0 {
		body[len(body)/2] ^= 0x5a
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return nil
}
