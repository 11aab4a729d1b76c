package auth

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeCred issues numbered tokens that live `life` on the fake clock, or
// fails with err. With gate set, each call blocks until the gate yields.
type fakeCred struct {
	clock *fakeClock
	life  time.Duration

	mu sync.Mutex
	// GUARDED_BY(mu)
	err    error
	calls  int
	tokens []string
	reqs   []policy.TokenRequestOptions
	// gate, when non-nil, is received from before answering; started is
	// sent to (non-blocking) when a call begins.
	gate    chan struct{}
	started chan struct{}
	// same makes it return its previous token again (a credential's own
	// cache).
	same    bool
	lastExp time.Time
}

func (f *fakeCred) GetToken(ctx context.Context, tro policy.TokenRequestOptions) (azcore.AccessToken, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	gate, started := f.gate, f.started
	f.reqs = append(f.reqs, tro)
	f.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return azcore.AccessToken{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return azcore.AccessToken{}, f.err
	}
	if f.same && len(f.tokens) > 0 {
		return azcore.AccessToken{Token: f.tokens[len(f.tokens)-1], ExpiresOn: f.lastExp}, nil
	}
	tok := fmt.Sprintf("eyJfake.%d.token-%d", n, n)
	f.tokens = append(f.tokens, tok)
	f.lastExp = f.clock.Now().Add(f.life)
	return azcore.AccessToken{Token: tok, ExpiresOn: f.lastExp}, nil
}

func (f *fakeCred) set(fn func(f *fakeCred)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeCred) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// logBuf collects log output from any goroutine.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log lines containing all of substrs.
func (l *logBuf) lines(substrs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range substrs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// leakCheck gathers everything a test printed, logged or returned as an
// error, and every secret it used, and fails the test at cleanup if any
// secret appears anywhere. Every test that handles a credential uses one.
type leakCheck struct {
	t   *testing.T
	log *logBuf

	mu sync.Mutex
	// GUARDED_BY(mu)
	secrets []string
	texts   []string
	sources []func() []string
}

func newLeakCheck(t *testing.T) *leakCheck {
	lc := &leakCheck{t: t, log: &logBuf{}}
	t.Cleanup(lc.check)
	return lc
}

// logger logs everything, debug included, into the check.
func (lc *leakCheck) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(lc.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// secret registers values that must not appear.
func (lc *leakCheck) secret(vs ...string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.secrets = append(lc.secrets, vs...)
}

// secretsFrom registers a source of secrets read at check time (the
// tokens a stand-in issued).
func (lc *leakCheck) secretsFrom(f func() []string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.sources = append(lc.sources, f)
}

// text records something the user could see (an error, a Describe line).
func (lc *leakCheck) text(s string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.texts = append(lc.texts, s)
}

// err records err's message (and %+v) and returns err.
func (lc *leakCheck) err(err error) error {
	if err != nil {
		lc.text(err.Error())
		lc.text(fmt.Sprintf("%+v %#v", err, err))
	}
	return err
}

func (lc *leakCheck) check() {
	for _, l := range lc.leaks() {
		lc.t.Error(l)
	}
}

// leaks describes every secret found in what was recorded.
func (lc *leakCheck) leaks() []string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	secrets := append([]string(nil), lc.secrets...)
	for _, f := range lc.sources {
		secrets = append(secrets, f()...)
	}
	hay := strings.Join(append(lc.texts, lc.log.String()), "\n")
	var out []string
	for _, s := range secrets {
		if len(s) < 6 {
			continue
		}
		if strings.Contains(hay, s) {
			out = append(out, fmt.Sprintf("a secret leaked into logs or errors: %.12s… (%d bytes)", s, len(s)))
		} else if len(s) > 40 && strings.Contains(hay, s[len(s)-32:]) {
			// A truncated copy leaks as badly as a whole one.
			out = append(out, fmt.Sprintf("the tail of a secret leaked into logs or errors: %.12s…", s))
		}
	}
	return out
}
