package fs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Interrupts. The kernel sends FUSE_INTERRUPT for a request whose caller
// gets any signal it does not ignore, and go-fuse turns that into a
// cancelled context. Programs are signalled all the time for reasons that
// have nothing to do with the file: the Go runtime preempts goroutines
// with SIGURG, Python and C programs get SIGCHLD and SIGALRM. Honouring
// every interrupt made a lookup inside renameat2(2), stat(2) or open(2)
// fail with EINTR, which no local filesystem returns and which neither
// glibc nor Go's x/sys/unix retries (CI caught RENAME_NOREPLACE failing
// this way). gcsfuse met the same bug and ignores interrupts by default
// (--ignore-interrupts).
//
// Ignoring them outright has its own cost: once a request has reached the
// daemon, the kernel waits for its answer even if the caller is being
// killed, so `kill -9` or Ctrl-C on a read stuck behind a dying backend
// would leave the process unkillable until the backend's retries run out.
// So a request stops early only when its caller is dying: after an
// interrupt the daemon looks at the calling thread's pending signals in
// /proc, where the kernel puts SIGKILL on every thread of a process that
// a fatal signal is taking down (SIGKILL itself, or SIGINT and SIGTERM
// without a handler). A handled signal leaves the request to finish; the
// program sees its handler run once the call returns, as on a local disk.
// Options.InterruptOnAnySignal restores honouring every interrupt.
//
// The kernel gives the caller's thread id in the daemon's pid namespace,
// and 0 for a caller outside it: under the CSI driver, whose node pod has
// its own, every application pod's caller is 0. Those requests finish
// whatever the caller's fate, as gcsfuse's do; the wait is bounded by the
// store's retries and timeouts.

// errCallerDying is the cause of a request context cancelled because its
// caller is being killed; the request answers EINTR (context.Canceled).
var errCallerDying = fmt.Errorf("blobfs: the caller is being killed: %w", context.Canceled)

// dyingPoll is how often an interrupted request looks at its caller again:
// the interrupt comes once per request, maybe for a harmless signal, and
// a fatal one can follow while the request still runs.
var dyingPoll = 50 * time.Millisecond

// procRoot is where callers' /proc/<tid>/status files are read (tests
// point it at a fake tree).
var procRoot = "/proc"

// interruptible returns the context a read-side request (lookup, getattr,
// open for reading, read, listing) runs under, and a function to call when
// it returns. With InterruptOnAnySignal it is ctx itself. Otherwise it
// keeps ctx's values and ends only if ctx is interrupted and the caller
// is, or becomes, a dying thread.
func (v *Volume) interruptible(ctx context.Context) (context.Context, func()) {
	if v.opts.InterruptOnAnySignal || ctx.Done() == nil {
		return ctx, func() {}
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok || caller.Pid == 0 {
		// No caller to look at (the kernel's own request, or a caller in
		// a pid namespace the daemon cannot see): finish the request.
		return context.WithoutCancel(ctx), func() {}
	}
	c := &callerContext{Context: context.WithoutCancel(ctx), kernel: ctx, tid: caller.Pid}
	return c, c.release
}

// callerContext watches its caller only once something waits on it (Done,
// Err). Arming the watch costs a goroutine (go-fuse's context is not one
// the context package can hook without one) and about a microsecond, and
// most read-side requests never wait: a read served from the node cache,
// a lookup answered from the attribute cache.
type callerContext struct {
	context.Context // the request's values; never cancelled
	kernel          context.Context
	tid             uint32

	once   sync.Once
	armed  context.Context // set by once
	cancel context.CancelCauseFunc
	stop   func() bool // nil if never armed
}

func (c *callerContext) arm() {
	c.armed, c.cancel = context.WithCancelCause(c.Context)
	c.stop = context.AfterFunc(c.kernel, func() { watchCaller(c.armed, c.cancel, c.tid) })
}

func (c *callerContext) Done() <-chan struct{} {
	c.once.Do(c.arm)
	return c.armed.Done()
}

func (c *callerContext) Err() error {
	c.once.Do(c.arm)
	return c.armed.Err()
}

// release ends the context when its request returns (as a cancelled
// context, for anything still holding it) and stops the watch.
func (c *callerContext) release() {
	c.once.Do(func() { c.armed, c.cancel = context.WithCancelCause(c.Context) })
	if c.stop != nil {
		c.stop()
	}
	c.cancel(nil)
}

// watchCaller cancels ctx once thread tid is dying, or is gone; it returns
// when ctx ends (the request finished).
func watchCaller(ctx context.Context, cancel context.CancelCauseFunc, tid uint32) {
	t := time.NewTicker(dyingPoll)
	defer t.Stop()
	for {
		if dying, err := threadDying(tid); dying {
			cancel(errCallerDying)
			return
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			// Cannot tell (no /proc): keep the request, as gcsfuse does.
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// threadDying reports whether thread tid has SIGKILL pending: the mark the
// kernel leaves on every thread of a process a fatal signal is ending. A
// thread that no longer exists is reported as dying (nobody waits for the
// answer) along with an error that matches os.ErrNotExist.
func threadDying(tid uint32) (bool, error) {
	f, err := os.Open(procRoot + "/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return errors.Is(err, os.ErrNotExist), fmt.Errorf("caller %d: %w", tid, err)
	}
	defer f.Close()
	pending, err := pendingSignals(f)
	if err != nil {
		return false, fmt.Errorf("caller %d: %w", tid, err)
	}
	return pending&(1<<(syscall.SIGKILL-1)) != 0, nil
}

// pendingSignals reads the thread's own (SigPnd) and its process's shared
// (ShdPnd) pending-signal masks from a /proc/<tid>/status file.
func pendingSignals(r io.Reader) (uint64, error) {
	var mask uint64
	seen := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "SigPnd" && key != "ShdPnd") {
			continue
		}
		m, err := strconv.ParseUint(strings.TrimSpace(val), 16, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		mask |= m
		seen++
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if seen == 0 {
		return 0, errors.New("no SigPnd or ShdPnd line")
	}
	return mask, nil
}
