package auth

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/internal/config"
)

var storageReq = policy.TokenRequestOptions{Scopes: []string{StorageScope}, EnableCAE: true}

var testIdentity = Identity{
	Mode: config.AuthWorkloadIdentity, Method: "workload identity",
	ClientID: "11111111-2222-3333-4444-555555555555", TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47",
}

func newTestSource(t *testing.T, cred *fakeCred, clock *fakeClock, lc *leakCheck, reg prometheus.Registerer) *TokenSource {
	t.Helper()
	s, err := NewTokenSource(cred, testIdentity, Options{Now: clock.Now, Logger: lc.logger(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.waitRefreshes)
	return s
}

func getToken(t *testing.T, s *TokenSource) string {
	t.Helper()
	tok, err := s.GetToken(context.Background(), storageReq)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	return tok.Token
}

// A 60-second token is refreshed a third of its life before expiry, again
// and again, and callers never see an error or an expired token.
func TestTokenSourceRefreshesAheadOfExpiry(t *testing.T) {
	clock, lc := newFakeClock(), newLeakCheck(t)
	cred := &fakeCred{clock: clock, life: 60 * time.Second}
	s := newTestSource(t, cred, clock, lc, nil)

	first, err := s.GetToken(context.Background(), storageReq)
	if err != nil {
		t.Fatal(err)
	}
	// Refreshed 20 s (a third) before expiry; handed out until 10 s before.
	if want := clock.Now().Add(40 * time.Second); !first.RefreshOn.Equal(want) {
		t.Errorf("RefreshOn = %v, want %v (a third of 60 s before expiry)", first.RefreshOn, want)
	}
	if want := clock.Now().Add(50 * time.Second); !first.ExpiresOn.Equal(want) {
		t.Errorf("ExpiresOn = %v, want %v (the expiry less the 10 s delta)", first.ExpiresOn, want)
	}
	clock.Advance(30 * time.Second) // not yet due
	if got := getToken(t, s); got != first.Token || cred.numCalls() != 1 {
		t.Fatalf("token before the refresh margin: got %q after %d calls, want the cached %q after 1", got, cred.numCalls(), first.Token)
	}

	seen := []string{first.Token}
	clock.Advance(15 * time.Second) // 45 s: inside the 20 s margin
	for i := 0; i < 4; i++ {
		got := getToken(t, s)
		if got == seen[len(seen)-1] {
			t.Fatalf("refresh %d: still the old token %q after %d calls", i+1, got, cred.numCalls())
		}
		seen = append(seen, got)
		clock.Advance(41 * time.Second) // past the next refresh point, never past expiry
	}
	if n := cred.numCalls(); n != 5 {
		t.Errorf("credential called %d times, want 5 (one fetch, four refreshes)", n)
	}
	for i, tok := range seen {
		if want := cred.tokens[i]; tok != want {
			t.Errorf("token %d = %q, want %q: refreshes out of order", i, tok, want)
		}
	}
	if lines := lc.log.lines("level=WARN"); len(lines) > 0 {
		t.Errorf("unexpected warnings: %q", lines)
	}
}

// One refresh at a time: concurrent first callers share one fetch; while a
// refresh runs, other callers keep the valid token without waiting.
func TestTokenSourceSingleFlight(t *testing.T) {
	clock, lc := newFakeClock(), newLeakCheck(t)
	gate, started := make(chan struct{}), make(chan struct{}, 100)
	cred := &fakeCred{clock: clock, life: 60 * time.Second, gate: gate, started: started}
	s := newTestSource(t, cred, clock, lc, nil)

	var wg sync.WaitGroup
	results := make([]string, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := s.GetToken(context.Background(), storageReq)
			if err != nil {
				t.Errorf("GetToken: %v", err)
			}
			results[i] = tok.Token
		}()
	}
	<-started
	close(gate) // let the one fetch finish
	wg.Wait()
	if n := cred.numCalls(); n != 1 {
		t.Fatalf("%d concurrent first calls made %d fetches, want 1", len(results), n)
	}
	for _, r := range results {
		if r != results[0] {
			t.Fatalf("callers got different tokens: %q", results)
		}
	}

	// Now make a refresh hang: the caller that started it waits, everyone
	// else keeps going with the valid token.
	gate2 := make(chan struct{})
	cred.set(func(f *fakeCred) { f.gate = gate2 })
	clock.Advance(45 * time.Second)
	leaderDone := make(chan string)
	go func() {
		tok, err := s.GetToken(context.Background(), storageReq)
		if err != nil {
			t.Errorf("GetToken: %v", err)
		}
		leaderDone <- tok.Token
	}()
	<-started // the refresh is in flight
	for i := 0; i < 5; i++ {
		if got := getToken(t, s); got != results[0] {
			t.Fatalf("during a refresh a caller got %q, want the still-valid %q", got, results[0])
		}
	}
	close(gate2)
	if got := <-leaderDone; got == results[0] {
		t.Errorf("the caller that triggered the refresh got the old token")
	}
	if n := cred.numCalls(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
}

// A failing refresh keeps the valid token in use; once it has expired,
// calls fail with an error wrapping blob.ErrPermission, logged once with
// identity and tenant; after the backoff the next call tries again and the
// source recovers by itself.
func TestTokenSourceFailureAndRecovery(t *testing.T) {
	clock, lc := newFakeClock(), newLeakCheck(t)
	cred := &fakeCred{clock: clock, life: 60 * time.Second}
	s := newTestSource(t, cred, clock, lc, nil)
	first := getToken(t, s)

	cred.set(func(f *fakeCred) { f.err = errors.New("token endpoint unreachable: connection refused") })
	clock.Advance(45 * time.Second) // due
	if got := getToken(t, s); got != first {
		t.Fatalf("after a failed refresh got %q, want the still-valid %q", got, first)
	}
	if n := len(lc.log.lines("level=WARN", "token refresh failed", testIdentity.ClientID, testIdentity.TenantID)); n != 1 {
		t.Fatalf("want one warning naming client and tenant, got %d in:\n%s", n, lc.log)
	}
	// Within the backoff nobody asks the endpoint again.
	calls := cred.numCalls()
	getToken(t, s)
	if cred.numCalls() != calls {
		t.Errorf("refresh retried inside the backoff")
	}

	clock.Advance(20 * time.Second) // 65 s: expired
	_, err := s.GetToken(context.Background(), storageReq)
	lc.err(err)
	if !errors.Is(err, blob.ErrPermission) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("expired token and failing refresh: err = %v, want one wrapping blob.ErrPermission", err)
	}
	var te *TokenError
	if !errors.As(err, &te) || !strings.Contains(te.Reason, "connection refused") {
		t.Fatalf("err = %#v, want a *TokenError with the cause summarized", err)
	}
	for _, want := range []string{testIdentity.ClientID, testIdentity.TenantID} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	errLines := lc.log.lines("level=ERROR", testIdentity.ClientID, testIdentity.TenantID)
	if len(errLines) != 1 {
		t.Fatalf("want one error line naming client and tenant, got %d in:\n%s", len(errLines), lc.log)
	}

	// Failing fast inside the backoff: same error, no new request, no new
	// error line.
	calls = cred.numCalls()
	for i := 0; i < 3; i++ {
		if _, err := s.GetToken(context.Background(), storageReq); !errors.Is(err, blob.ErrPermission) {
			t.Fatalf("inside the backoff: err = %v", err)
		}
	}
	if cred.numCalls() != calls {
		t.Errorf("%d token requests inside the backoff, want none", cred.numCalls()-calls)
	}
	clock.Advance(maxBackoff) // next attempt due, still failing
	if _, err := s.GetToken(context.Background(), storageReq); !errors.Is(err, blob.ErrPermission) {
		t.Fatalf("still revoked: err = %v", err)
	}
	if n := len(lc.log.lines("level=ERROR")); n != 1 {
		t.Errorf("%d error lines for one outage, want 1", n)
	}

	// The identity is fixed: after the backoff the next call recovers.
	cred.set(func(f *fakeCred) { f.err = nil })
	clock.Advance(maxBackoff)
	if got := getToken(t, s); got == first {
		t.Fatal("recovered with the old token")
	}
	if n := len(lc.log.lines("level=INFO", "recovered", testIdentity.ClientID)); n != 1 {
		t.Errorf("want one recovery line, got %d in:\n%s", n, lc.log)
	}
	// And the cycle is normal again.
	clock.Advance(45 * time.Second)
	getToken(t, s)
	if lines := lc.log.lines("level=WARN"); len(lines) != 1 {
		t.Errorf("warnings after recovery: %q", lines)
	}
}

// A refresh that failed while the token was valid only warned; when the
// token then expires inside the backoff, the call that first fails says so
// in the error line, without a new token request.
func TestTokenSourceExpiresDuringBackoff(t *testing.T) {
	clock, lc := newFakeClock(), newLeakCheck(t)
	cred := &fakeCred{clock: clock, life: 60 * time.Second}
	s := newTestSource(t, cred, clock, lc, nil)
	getToken(t, s)
	cred.set(func(f *fakeCred) {
		f.err = errors.New("AADSTS700024: Client assertion is not within its valid time range.")
	})
	clock.Advance(49500 * time.Millisecond) // due; the refresh fails; retry at 50.5 s
	getToken(t, s)                          // the still-valid token
	calls := cred.numCalls()
	clock.Advance(700 * time.Millisecond) // 50.2 s: within 10 s of expiry, no longer handed out; still backing off
	_, err := s.GetToken(context.Background(), storageReq)
	if !errors.Is(lc.err(err), blob.ErrPermission) || !strings.Contains(err.Error(), "AADSTS700024") {
		t.Fatalf("err = %v", err)
	}
	if cred.numCalls() != calls {
		t.Error("a token request inside the backoff")
	}
	if n := len(lc.log.lines("level=ERROR", testIdentity.ClientID, testIdentity.TenantID, "AADSTS700024")); n != 1 {
		t.Errorf("want one error line, got %d:\n%s", n, lc.log)
	}
}

// A caller whose context ends stops waiting, but the refresh it started
// completes for everyone else.
func TestTokenSourceCallerCancelDoesNotCancelRefresh(t *testing.T) {
	clock, lc := newFakeClock(), newLeakCheck(t)
	gate, started := make(chan struct{}), make(chan struct{}, 10)
	cred := &fakeCred{clock: clock, life: 60 * time.Second, gate: gate, started: started}
	s := newTestSource(t, cred, clock, lc, nil)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := s.GetToken(ctx, storageReq)
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", err)
	}
	close(gate)
	s.waitRefreshes()
	getToken(t, s)
	if n := cred.numCalls(); n != 1 {
		t.Errorf("%d fetches, want 1: the refresh must survive its caller", n)
	}
}

// A credential that hands back the token blobfs already has (its own
// cache) does not turn every call into a refresh.
func TestTokenSourceNoProgress(t *testing.T) {
	clock, lc := newFakeClock(), newLeakCheck(t)
	cred := &fakeCred{clock: clock, life: time.Hour}
	s, err := NewTokenSource(cred, testIdentity, Options{Now: clock.Now, Logger: lc.logger(), RefreshMargin: 20 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	getToken(t, s)
	cred.set(func(f *fakeCred) { f.same = true })
	clock.Advance(41 * time.Minute)
	getToken(t, s)
	calls := cred.numCalls()
	for i := 0; i < 10; i++ {
		getToken(t, s)
	}
	if cred.numCalls() != calls {
		t.Errorf("%d refreshes after a refresh that returned the same token, want 0 until the retry point", cred.numCalls()-calls)
	}
	clock.Advance(maxBackoff)
	getToken(t, s)
	if cred.numCalls() != calls+1 {
		t.Errorf("no retry after the retry point")
	}
}

// Requests differing in scope, tenant or CAE get their own tokens; a
// claims challenge bypasses the cache.
func TestTokenSourceCacheKeys(t *testing.T) {
	clock, lc := newFakeClock(), newLeakCheck(t)
	cred := &fakeCred{clock: clock, life: time.Hour}
	s := newTestSource(t, cred, clock, lc, nil)
	reqs := []policy.TokenRequestOptions{
		storageReq,
		{Scopes: []string{StorageScope}},
		{Scopes: []string{"https://management.azure.com/.default"}, EnableCAE: true},
		{Scopes: []string{StorageScope}, EnableCAE: true, TenantID: "other"},
	}
	for round := 0; round < 2; round++ {
		for _, r := range reqs {
			if _, err := s.GetToken(context.Background(), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := cred.numCalls(); n != len(reqs) {
		t.Errorf("%d fetches for %d distinct requests asked twice, want %d", n, len(reqs), len(reqs))
	}
	claims := storageReq
	claims.Claims = `{"access_token":{"nbf":{"essential":true}}}`
	a, _ := s.GetToken(context.Background(), claims)
	b, _ := s.GetToken(context.Background(), storageReq)
	if a.Token == b.Token {
		t.Error("a claims challenge was answered from the cache")
	}
}

func TestRefreshTime(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name          string
		margin, life  time.Duration
		refreshOn     time.Duration // after now; 0 = unset
		wantBeforeExp time.Duration
	}{
		{"60s token, default: a third", 0, time.Minute, 0, 20 * time.Second},
		{"1h token, default: capped at 5 min", 0, time.Hour, 0, 5 * time.Minute},
		{"24h token, default", 0, 24 * time.Hour, 0, 5 * time.Minute},
		{"explicit margin", 10 * time.Second, time.Minute, 0, 10 * time.Second},
		{"explicit margin capped at half the life", 50 * time.Second, time.Minute, 0, 30 * time.Second},
		{"credential's earlier RefreshOn wins", 0, 24 * time.Hour, 12 * time.Hour, 12 * time.Hour},
		{"credential's later RefreshOn ignored", 0, time.Hour, 58 * time.Minute, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &TokenSource{margin: tc.margin}
			tok := fakeToken(now, tc.life)
			if tc.refreshOn > 0 {
				tok.RefreshOn = now.Add(tc.refreshOn)
			}
			got := tok.ExpiresOn.Sub(s.refreshTime(now, tok))
			if got != tc.wantBeforeExp {
				t.Errorf("refresh %v before expiry, want %v", got, tc.wantBeforeExp)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
}

func TestTokenSourceMetrics(t *testing.T) {
	clock, lc := newFakeClock(), newLeakCheck(t)
	cred := &fakeCred{clock: clock, life: 60 * time.Second}
	reg := prometheus.NewPedanticRegistry()
	s := newTestSource(t, cred, clock, lc, reg)
	getToken(t, s)
	clock.Advance(15 * time.Second)

	if got := gauge(t, reg, "blobfs_auth_token_expiry_seconds", "scope", StorageScope); got != 35 {
		t.Errorf("expiry gauge = %v, want 35 (60 s token, 15 s later, 10 s delta)", got)
	}
	cred.set(func(f *fakeCred) { f.err = errors.New("boom") })
	clock.Advance(30 * time.Second)
	getToken(t, s) // failed refresh, old token still valid
	if got := gauge(t, reg, "blobfs_auth_token_refreshes_total", "result", "success"); got != 1 {
		t.Errorf("successes = %v, want 1", got)
	}
	if got := gauge(t, reg, "blobfs_auth_token_refreshes_total", "result", "failure"); got != 1 {
		t.Errorf("failures = %v, want 1", got)
	}
	// A second source on the same registerer is a wiring mistake, reported.
	if _, err := NewTokenSource(cred, testIdentity, Options{Registerer: reg}); err == nil {
		t.Error("a second registration on one registerer succeeded")
	}
}

// gauge reads one sample (gauge or counter) with the given label.
func gauge(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, label, value) {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no sample %s{%s=%q}", name, label, value)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func fakeToken(now time.Time, life time.Duration) azcore.AccessToken {
	return azcore.AccessToken{Token: "t", ExpiresOn: now.Add(life)}
}
