// Package testenv holds what every blobfs test agrees on: how big test data
// is, when a test may mount FUSE, and that tests only ever dial loopback.
package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// SizeEnv names the environment variable that scales test data:
// "small" (the default, used by `make test` and CI) or "full"
// (`make test-full`, the sizes named in the issues).
const SizeEnv = "BLOBFS_TEST_SIZE"

// Full reports whether tests run at full size.
func Full() bool { return os.Getenv(SizeEnv) == "full" }

// Pick returns small or full depending on BLOBFS_TEST_SIZE.
func Pick[T any](small, full T) T {
	if Full() {
		return full
	}
	return small
}

// RequireFUSE skips the test, with a clear reason, when a real FUSE mount
// is impossible here: no /dev/fuse or not root. CI has both, so CI runs
// every mount test.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping real FUSE mount test: /dev/fuse is absent (%v)", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping real FUSE mount test: needs root to mount without fusermount")
	}
}

// ErrNotLoopback is returned by LoopbackDialer for any non-loopback address.
var ErrNotLoopback = fmt.Errorf("testenv: tests may only dial loopback addresses")

// LoopbackDialer dials like net.Dialer but refuses every address that is
// not loopback (127.0.0.0/8, ::1) — including 169.254.169.254, private
// ranges and any name that resolves elsewhere. Tests route their HTTP
// clients through it so a misconfigured endpoint fails loudly instead of
// leaving the machine.
func LoopbackDialer(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return nil, fmt.Errorf("dial %s (%s): %w", addr, ip.IP, ErrNotLoopback)
		}
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	return d.DialContext(ctx, network, net.JoinHostPort(ips[0].IP.String(), port))
}

// LoopbackTransport is an http.Transport that only dials loopback.
func LoopbackTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = LoopbackDialer
	tr.Proxy = nil
	return tr
}
