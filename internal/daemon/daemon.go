// Package daemon runs `blobfs mount` in the background the way users of
// BlobFuse2 expect: the command returns only once the mount is ready, with
// a zero exit, or fails with the daemon's own error message and a non-zero
// exit, leaving nothing mounted.
//
// The parent re-executes its own binary in a new session with the same
// arguments plus an environment marker, hands it the write end of a pipe as
// fd 3, and waits. The child mounts, then calls Ready(nil) (or Ready(err))
// which writes one line on the pipe and closes it. If the child dies first,
// the parent sees EOF and reports that, with the tail of the child's log.
package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// envMarker tells the re-executed process that it is the daemon and that
// fd 3 is its readiness pipe.
const envMarker = "_BLOBFS_DAEMON_READY_FD"

// readyFD is the child's file descriptor for the readiness pipe.
const readyFD = 3

// ErrDaemonFailed wraps the error a daemon reported before becoming ready.
var ErrDaemonFailed = errors.New("mount daemon failed")

// IsDaemon reports whether this process is a daemon started by Start.
func IsDaemon() bool { return os.Getenv(envMarker) != "" }

// Options configure Start.
type Options struct {
	// Args are the child's arguments, without the program name.
	Args []string
	// LogFile receives the daemon's stdout and stderr (created 0600,
	// appended to). Empty means /dev/null.
	LogFile string
	// Timeout bounds the wait for readiness.
	Timeout time.Duration
}

// Start launches the daemon and waits until it reports readiness. It
// returns the daemon's pid.
func Start(ctx context.Context, opts Options) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("daemon: find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("daemon: pipe: %w", err)
	}
	defer r.Close()

	out, err := openLog(opts.LogFile)
	if err != nil {
		w.Close()
		return 0, err
	}
	defer out.Close()

	cmd := exec.Command(self, opts.Args...)
	cmd.Env = append(os.Environ(), envMarker+"=1")
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{w} // becomes fd 3
	// A new session: the daemon outlives the terminal and its signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, fmt.Errorf("daemon: start %s: %w", self, err)
	}
	w.Close() // the child holds the only write end now
	pid := cmd.Process.Pid
	// Reap the child if it exits while we wait; after we return, init does.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		s = strings.TrimSpace(s)
		if s == "ready" {
			return pid, nil
		}
		if s == "" {
			// EOF without a word: the daemon died. Wait for its status.
			var exitErr error
			select {
			case exitErr = <-exited:
			case <-time.After(5 * time.Second):
			}
			return 0, fmt.Errorf("%w: exited before the mount was ready (%v)%s", ErrDaemonFailed, exitErr, logTail(opts.LogFile))
		}
		return 0, fmt.Errorf("%w: %s", ErrDaemonFailed, strings.TrimPrefix(s, "error: "))
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return 0, fmt.Errorf("%w: not ready after %v; sent SIGTERM%s", ErrDaemonFailed, timeout, logTail(opts.LogFile))
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return 0, fmt.Errorf("daemon: waiting for readiness: %w", ctx.Err())
	}
}

// Ready tells the waiting parent how mounting went. It is a no-op outside
// a daemon, and only the first call counts.
func Ready(mountErr error) {
	if !IsDaemon() {
		return
	}
	os.Unsetenv(envMarker) // children of the daemon must not inherit it
	f := os.NewFile(readyFD, "ready")
	if f == nil {
		return
	}
	defer f.Close()
	if mountErr != nil {
		// One line: the parent prints it as the command's error.
		fmt.Fprintf(f, "error: %s\n", strings.ReplaceAll(mountErr.Error(), "\n", "; "))
		return
	}
	io.WriteString(f, "ready\n")
}

func openLog(path string) (*os.File, error) {
	if path == "" {
		return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("daemon: open log file: %w", err)
	}
	return f, nil
}

// logTail returns the end of the daemon's log, for an error message.
func logTail(path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "\n--- daemon log " + path + " ---\n" + strings.TrimRight(string(b), "\n")
}
