package azurite

import (
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// Chaos makes a FaultProxy misbehave at random, as a congested account
// and a lossy network do: a fraction of requests answered 503 Server
// Busy, a fraction whose connection is cut (before the response, or in
// the middle of a download's body), and added latency. The zero value
// injects nothing.
type Chaos struct {
	// Busy is the fraction of requests answered 503 ServerBusy.
	Busy float64
	// Reset is the fraction of requests whose connection is cut: uploads
	// before any response, downloads part-way through the body.
	Reset float64
	// Latency is added before every request is forwarded.
	Latency time.Duration
	// Seed makes the sequence of faults reproducible.
	Seed uint64
}

// SetChaos starts (or, with the zero Chaos, stops) random faults.
func (p *FaultProxy) SetChaos(c Chaos) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.chaos = c
	p.rng = rand.New(rand.NewPCG(c.Seed, c.Seed^0x5eed))
}

// Faults counts the faults chaos injected so far, by kind.
type Faults struct{ Busy, Resets int64 }

// ChaosFaults reports how many faults were injected.
func (p *FaultProxy) ChaosFaults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// injectChaos applies the chaos settings to one request and reports
// whether it answered (or killed) the request itself.
func (p *FaultProxy) injectChaos(w http.ResponseWriter, r *http.Request) bool {
	p.mu.Lock()
	c := p.chaos
	var roll, cut float64
	if p.rng != nil {
		roll, cut = p.rng.Float64(), p.rng.Float64()
	}
	busy := roll < c.Busy
	reset := !busy && roll < c.Busy+c.Reset
	switch {
	case busy:
		p.faults.Busy++
	case reset:
		p.faults.Resets++
	}
	p.mu.Unlock()
	if c.Latency > 0 {
		time.Sleep(c.Latency)
	}
	switch {
	case busy:
		_, _ = io.Copy(io.Discard, r.Body)
		writeServerBusy(w, r)
		return true
	case reset && r.Method == http.MethodGet:
		// Forward, then cut the body part-way: the client sees a
		// truncated response (unexpected EOF), as on a dropped link.
		w = &cuttingWriter{ResponseWriter: w, after: int64(cut * (256 << 10))}
		p.forward(w, r)
		return true
	case reset:
		abort(w)
		return true
	}
	return false
}

// abort closes the client's connection without a response.
func abort(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// cuttingWriter passes through the first after bytes of the body, then
// kills the connection.
type cuttingWriter struct {
	http.ResponseWriter
	after   int64
	written int64
}

func (c *cuttingWriter) Write(b []byte) (int, error) {
	if c.written+int64(len(b)) > c.after {
		n, _ := c.ResponseWriter.Write(b[:max(0, c.after-c.written)])
		c.written += int64(n)
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // net/http closes the connection
	}
	n, err := c.ResponseWriter.Write(b)
	c.written += int64(n)
	return n, err
}
