package testenv

import (
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// OnLockedThread runs op on a goroutine locked to an OS thread of its own
// and returns that thread's id and, to come, op's result: a test can then
// signal the very thread blocked in op's system call.
func OnLockedThread(op func() error) (tid int, done <-chan error) {
	tids, errs := make(chan int, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		tids <- unix.Gettid()
		errs <- op()
	}()
	return <-tids, errs
}

// SignalThread sends sig to thread tid (of this process) n times, every
// interval, and stops early if op (whose result done carries) returns
// meanwhile: returned says whether it did, with its error.
func SignalThread(t testing.TB, tid int, sig syscall.Signal, n int, every time.Duration, done <-chan error) (returned bool, err error) {
	t.Helper()
	for range n {
		if err := unix.Tgkill(os.Getpid(), tid, sig); err != nil {
			t.Fatalf("signal thread %d: %v", tid, err)
		}
		select {
		case err := <-done: // the thread is gone with its goroutine
			return true, err
		case <-time.After(every):
		}
	}
	return false, nil
}
