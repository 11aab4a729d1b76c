package testenv

import (
	"context"
	"errors"
	"testing"
)

func TestLoopbackDialerRefusesOutside(t *testing.T) {
	// Refused before any packet is sent: the check runs on the resolved
	// address, and these literals need no resolver.
	for _, addr := range []string{"169.254.169.254:80", "10.0.0.1:443", "192.168.1.1:80", "8.8.8.8:53"} {
		_, err := LoopbackDialer(context.Background(), "tcp", addr)
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("dial %s: err = %v, want ErrNotLoopback", addr, err)
		}
	}
}

func TestLoopbackDialerAllowsLoopback(t *testing.T) {
	// A closed loopback port is the "unreachable endpoint" of these tests:
	// refused by the kernel, not by the guard.
	_, err := LoopbackDialer(context.Background(), "tcp", "127.0.0.1:1")
	if err == nil || errors.Is(err, ErrNotLoopback) {
		t.Fatalf("dial closed loopback port: err = %v, want connection refused", err)
	}
}

func TestPick(t *testing.T) {
	t.Setenv(SizeEnv, "")
	if Pick(1, 2) != 1 {
		t.Fatal("default size is not small")
	}
	t.Setenv(SizeEnv, "full")
	if Pick(1, 2) != 2 {
		t.Fatal("full size not honoured")
	}
}
