package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

const (
	// maxDefaultMargin caps the default refresh margin. It equals
	// azidentity's own cache window: a refresh earlier than five minutes
	// before expiry would get the same cached token back.
	maxDefaultMargin = 5 * time.Minute
	// maxExpiryDelta is how long before its expiry a token stops being
	// handed out (a quarter of its life for short tokens): a request sent
	// with it must still arrive in time, on a server whose clock may be a
	// little ahead. golang.org/x/oauth2 uses 10 s for the same reason.
	maxExpiryDelta = 10 * time.Second
	// refreshTimeout bounds one refresh. It runs detached from the caller
	// that started it, so a bound is needed somewhere.
	refreshTimeout = time.Minute
)

// Backoff between failed refreshes: doubling from minBackoff up to
// maxBackoff. Short enough that a fixed identity (a rotated token file, a
// restored federated credential) is picked up within half a minute, long
// enough that a burst of file operations does not become a burst of token
// requests. Variables so tests can read them.
var (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// TokenSource is blobfs's caching token source. It wraps any
// azcore.TokenCredential and is one itself:
//
//   - it caches a token per request (scopes, tenant, CAE) and refreshes it
//     RefreshMargin before expiry — azcore's bearer policy alone would wait
//     until the last five minutes, which is all of a short token's life;
//   - a refresh is single-flight: the caller that finds the token due waits
//     for the new one, concurrent callers keep using the still-valid token,
//     and when there is no valid token every caller waits for the same
//     request to the token endpoint;
//   - a refresh runs detached from the caller's context, so one
//     interrupted file operation does not fail the others waiting on it;
//   - a failed refresh keeps the still-valid token in use (and logs once);
//   - with no valid token left, calls fail with a *TokenError wrapping
//     blob.ErrPermission, one log line names the identity and tenant, and
//     the next call after a backoff (1 s doubling to 30 s) tries again, so
//     the mount recovers by itself once the identity is valid again.
//
// The token returned carries RefreshOn = the next refresh time, so azcore's
// bearer policy comes back exactly when a new token is due.
type TokenSource struct {
	cred    azcore.TokenCredential
	id      Identity
	margin  time.Duration
	now     func() time.Time
	log     *slog.Logger
	secrets *secretSet
	// metrics is nil without a Registerer; set once in newTokenSource.
	metrics *metrics

	// wg counts running refreshes (tests wait for them).
	wg sync.WaitGroup

	mu sync.Mutex
	// GUARDED_BY(mu). Entries are never removed: a mount asks for one or
	// two scopes.
	entries map[string]*entry
}

// entry is the cached state for one kind of token request.
// All fields are GUARDED_BY(TokenSource.mu).
type entry struct {
	scope string
	tok   azcore.AccessToken
	// useBy is when tok stops being handed out: its expiry less the
	// expiry delta. INVARIANT: useBy is zero iff tok is.
	useBy time.Time
	// refreshAt is when the next refresh is due.
	refreshAt time.Time
	// flight is the refresh in progress, nil if none.
	flight *flight
	// failures counts consecutive failed refreshes; retryAt is the
	// earliest next attempt after one; lastErr is what callers get
	// meanwhile when no valid token is left.
	failures int
	retryAt  time.Time
	lastErr  *TokenError
	// logged is what the log last said, so each state change is logged
	// once and repeats go to debug.
	logged logState
}

type logState int

const (
	loggedOK      logState = iota
	loggedWarned           // refresh failing, still serving a valid token
	loggedFailing          // no valid token; operations fail
)

// flight is one refresh. done is closed after the entry is updated and the
// outcome logged; err is written before.
type flight struct {
	done chan struct{}
	err  error
}

// NewTokenSource wraps cred in blobfs's caching token source. id names the
// identity in logs and errors. Options used: RefreshMargin, Logger,
// Registerer, Now.
func NewTokenSource(cred azcore.TokenCredential, id Identity, opts Options) (*TokenSource, error) {
	return newTokenSource(cred, id, opts, nil)
}

func newTokenSource(cred azcore.TokenCredential, id Identity, opts Options, secrets *secretSet) (*TokenSource, error) {
	if cred == nil {
		return nil, errors.New("auth: NewTokenSource: nil credential")
	}
	if secrets == nil {
		secrets = &secretSet{}
	}
	s := &TokenSource{
		cred:    cred,
		id:      id,
		margin:  opts.RefreshMargin,
		now:     opts.now,
		log:     opts.logger(),
		secrets: secrets,
		entries: map[string]*entry{},
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(newMetrics(s)); err != nil {
			return nil, fmt.Errorf("auth: registering token metrics: %w", err)
		}
	}
	return s, nil
}

// String names the source; it never prints cached tokens.
func (s *TokenSource) String() string { return "auth.TokenSource{" + s.id.String() + "}" }

// Identity names who the tokens are for.
func (s *TokenSource) Identity() Identity { return s.id }

// GetToken implements azcore.TokenCredential.
func (s *TokenSource) GetToken(ctx context.Context, tro policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if tro.Claims != "" {
		// A claims challenge (CAE) says the service no longer accepts the
		// cached token; only a fresh one carrying these claims helps, and
		// it must not replace the token requests without claims get.
		tok, err := s.cred.GetToken(ctx, tro)
		if err != nil {
			status, reason := summarize(err, s.secrets.values())
			return azcore.AccessToken{}, &TokenError{Identity: s.id, Status: status, Reason: reason}
		}
		s.secrets.add(tok.Token)
		return tok, nil
	}

	key := cacheKey(tro)
	s.mu.Lock()
	e := s.entries[key]
	if e == nil {
		e = &entry{scope: strings.Join(tro.Scopes, " ")}
		s.entries[key] = e
	}
	now := s.now()
	valid := e.valid(now)
	f := e.flight
	switch {
	case valid && now.Before(e.refreshAt):
		// The common case: a cached token, not yet due.
		tok := e.out()
		s.mu.Unlock()
		return tok, nil
	case valid && (f != nil || now.Before(e.retryAt)):
		// Someone else is refreshing, or the last refresh failed moments
		// ago: keep going with the token that still works.
		tok := e.out()
		s.mu.Unlock()
		return tok, nil
	case f == nil && now.Before(e.retryAt):
		// No valid token and backing off: fail fast rather than turn every
		// file operation into a token request.
		err := e.lastErr
		// The last attempt failed while the token was still valid and only
		// warned; operations start failing now, so say so now.
		announce := e.logged != loggedFailing
		e.logged = loggedFailing
		retryIn := e.retryAt.Sub(now).Round(time.Millisecond)
		s.mu.Unlock()
		if announce {
			s.logFailing(retryIn, err.Reason)
		}
		return azcore.AccessToken{}, err
	case f == nil:
		f = s.startLocked(ctx, e, tro)
	}
	s.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-f.done:
		if f.err == nil {
			return e.out(), nil
		}
	default:
	}
	if e.valid(s.now()) {
		// The refresh failed or is still running, but the old token works.
		return e.out(), nil
	}
	select {
	case <-f.done:
		return azcore.AccessToken{}, f.err
	default:
	}
	return azcore.AccessToken{}, fmt.Errorf("auth: waiting for a storage token for %s: %w", s.id.full(), ctx.Err())
}

// cacheKey identifies requests that may share a token.
func cacheKey(tro policy.TokenRequestOptions) string {
	return strings.Join(tro.Scopes, " ") + "\x00" + tro.TenantID + "\x00" + strconv.FormatBool(tro.EnableCAE)
}

func (e *entry) valid(now time.Time) bool {
	return e.tok.Token != "" && now.Before(e.useBy)
}

// out is the cached token as handed to callers. ExpiresOn is the use-by
// time (the expiry less the delta), so azcore's bearer policy, which
// caches it too, stops sending it when blobfs does; RefreshOn is when
// blobfs will next try to refresh, so the policy asks again then.
// REQUIRES(TokenSource.mu)
func (e *entry) out() azcore.AccessToken {
	tok := e.tok
	tok.ExpiresOn = e.useBy
	next := e.refreshAt
	if e.retryAt.After(next) {
		next = e.retryAt
	}
	if next.After(tok.ExpiresOn) {
		next = tok.ExpiresOn
	}
	tok.RefreshOn = next
	return tok
}

// startLocked begins a refresh for e.
// REQUIRES(s.mu)
func (s *TokenSource) startLocked(ctx context.Context, e *entry, tro policy.TokenRequestOptions) *flight {
	f := &flight{done: make(chan struct{})}
	e.flight = f
	tro.Scopes = append([]string(nil), tro.Scopes...)
	// Detached from the caller's cancellation (FUSE interrupts one
	// operation; the others waiting on this refresh must not fail with
	// it) but keeping its values (azcore's request-scoped settings).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		tok, err := s.cred.GetToken(ctx, tro)
		s.finish(e, f, tok, err)
	}()
	return f
}

// finish records a refresh's outcome, logs state changes and wakes the
// waiters.
func (s *TokenSource) finish(e *entry, f *flight, tok azcore.AccessToken, err error) {
	s.mu.Lock()
	now := s.now()
	e.flight = nil
	if err == nil {
		switch {
		case tok.Token == "":
			err = errors.New("the credential returned an empty token")
		case !useBy(now, tok).After(now):
			err = fmt.Errorf("the credential returned a token that expires at %s, too soon to use", tok.ExpiresOn.UTC().Format(time.RFC3339))
		}
	}
	var logf func()
	if err == nil {
		s.secrets.add(tok.Token)
		logf = s.succeededLocked(e, tok, now)
	} else {
		var te *TokenError
		te, logf = s.failedLocked(e, err, now)
		f.err = te
	}
	s.mu.Unlock()
	// Log before waking the waiters, so that whatever a caller does next
	// (report EACCES, say) comes after the line that explains it.
	logf()
	close(f.done)
}

// REQUIRES(s.mu)
func (s *TokenSource) succeededLocked(e *entry, tok azcore.AccessToken, now time.Time) (logf func()) {
	progress := tok.ExpiresOn.After(e.tok.ExpiresOn)
	e.tok = tok
	e.useBy = useBy(now, tok)
	e.refreshAt = s.refreshTime(now, tok)
	if !progress || !e.refreshAt.After(now) {
		// The credential handed back a token blobfs already had (its own
		// cache: a margin wider than azidentity's five-minute window). Ask
		// again later rather than at every call.
		e.refreshAt = now.Add(min(maxBackoff, e.useBy.Sub(now)/2))
	}
	s.metrics.refreshed(true)
	was := e.logged
	e.failures, e.retryAt, e.lastErr, e.logged = 0, time.Time{}, nil, loggedOK
	expiresIn := e.useBy.Sub(now).Round(time.Millisecond)
	refreshIn := e.refreshAt.Sub(now).Round(time.Millisecond)
	return func() {
		if was != loggedOK {
			s.log.Info("auth: token refresh recovered; storage operations work again",
				"identity", s.id, "expires_in", expiresIn, "next_refresh_in", refreshIn)
			return
		}
		s.log.Debug("auth: token refreshed", "identity", s.id, "expires_in", expiresIn, "next_refresh_in", refreshIn)
	}
}

// REQUIRES(s.mu)
func (s *TokenSource) failedLocked(e *entry, err error, now time.Time) (*TokenError, func()) {
	status, reason := summarize(err, s.secrets.values())
	te := &TokenError{Identity: s.id, Status: status, Reason: reason}
	s.metrics.refreshed(false)
	e.failures++
	wait := backoff(e.failures)
	e.retryAt = now.Add(wait)
	e.lastErr = te
	valid := e.valid(now)
	expiresIn := e.useBy.Sub(now).Round(time.Millisecond)
	was := e.logged
	switch {
	case valid && was == loggedOK:
		e.logged = loggedWarned
		return te, func() {
			s.log.Warn("auth: token refresh failed; using the current token until it expires",
				"identity", s.id, "expires_in", expiresIn, "retry_in", wait, "error", reason)
		}
	case !valid && was != loggedFailing:
		e.logged = loggedFailing
		return te, func() { s.logFailing(wait, reason) }
	}
	failures := e.failures
	return te, func() {
		s.log.Debug("auth: token refresh failed again", "identity", s.id, "failures", failures, "retry_in", wait, "error", reason)
	}
}

// logFailing is the one line logged when operations start failing for
// want of a token: identity and tenant, the cause, never a token.
func (s *TokenSource) logFailing(retryIn time.Duration, reason string) {
	s.log.Error("auth: no valid storage token; operations fail with permission denied until the identity is valid again",
		"identity", s.id, "retry_in", retryIn, "error", reason)
}

// refreshTime is when a token obtained at now should be replaced: margin
// before expiry (default a third of its life, at most five minutes; never
// more than half its life), or earlier if the credential suggests it.
func (s *TokenSource) refreshTime(now time.Time, tok azcore.AccessToken) time.Time {
	life := tok.ExpiresOn.Sub(now)
	m := s.margin
	if m <= 0 {
		m = min(life/3, maxDefaultMargin)
	}
	m = min(m, life/2)
	at := tok.ExpiresOn.Add(-m)
	if !tok.RefreshOn.IsZero() && tok.RefreshOn.After(now) && tok.RefreshOn.Before(at) {
		at = tok.RefreshOn
	}
	return at
}

// useBy is when a token obtained at now stops being handed out.
func useBy(now time.Time, tok azcore.AccessToken) time.Time {
	return tok.ExpiresOn.Add(-min(maxExpiryDelta, tok.ExpiresOn.Sub(now)/4))
}

// backoff is the wait after the n-th consecutive failure.
func backoff(n int) time.Duration {
	d := minBackoff
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// waitRefreshes waits until no refresh is running (for tests).
func (s *TokenSource) waitRefreshes() { s.wg.Wait() }

// expiries reports seconds to expiry per cached scope (for metrics).
func (s *TokenSource) expiries() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := map[string]float64{}
	for _, e := range s.entries {
		if e.tok.Token == "" {
			continue
		}
		secs := e.useBy.Sub(now).Seconds()
		if old, ok := out[e.scope]; !ok || secs > old {
			out[e.scope] = secs
		}
	}
	return out
}
