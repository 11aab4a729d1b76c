package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	"testing"
	"time"
)

// TestMain lets the test binary play the daemon: when re-executed by Start
// it behaves as DAEMON_TEST_MODE says.
func TestMain(m *testing.M) {
	if IsDaemon() {
		switch os.Getenv("DAEMON_TEST_MODE") {
		case "ready":
			Ready(nil)
			// Stay alive a moment as a real daemon would, then exit.
			time.Sleep(200 * time.Millisecond)
			os.Exit(0)
		case "fail":
			Ready(errors.New("mount /x: container \"c\" not found\nsecond line"))
			os.Exit(1)
		case "die":
			os.Stderr.WriteString("panic: something broke before mounting\n")
			os.Exit(2)
		case "hang":
			time.Sleep(time.Hour)
		}
	}
	os.Exit(m.Run())
}

func start(t *testing.T, mode string, timeout time.Duration) (int, error, string) {
	t.Helper()
	t.Setenv("DAEMON_TEST_MODE", mode)
	log := filepath.Join(t.TempDir(), "daemon.log")
	pid, err := Start(context.Background(), Options{Args: []string{"-test.run=^$"}, LogFile: log, Timeout: timeout})
	return pid, err, log
}

func TestReady(t *testing.T) {
	pid, err, log := start(t, "ready", time.Minute)
	if err != nil || pid <= 0 {
		t.Fatalf("Start = %d, %v", pid, err)
	}
	st, err := os.Stat(log)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("log file mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	// The daemon runs in its own session, detached from our terminal.
	if sid, err := unix.Getsid(pid); err == nil && sid != pid {
		t.Fatalf("daemon session id %d, want its own pid %d", sid, pid)
	}
}

func TestReportedError(t *testing.T) {
	_, err, _ := start(t, "fail", time.Minute)
	if !errors.Is(err, ErrDaemonFailed) || !strings.Contains(err.Error(), `container "c" not found; second line`) {
		t.Fatalf("err = %v", err)
	}
}

func TestDiedBeforeReady(t *testing.T) {
	_, err, _ := start(t, "die", time.Minute)
	if !errors.Is(err, ErrDaemonFailed) || !strings.Contains(err.Error(), "something broke before mounting") {
		t.Fatalf("err = %v, want the daemon's log tail", err)
	}
}

func TestNotReadyInTime(t *testing.T) {
	_, err, _ := start(t, "hang", 300*time.Millisecond)
	if !errors.Is(err, ErrDaemonFailed) || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("err = %v", err)
	}
}

func TestReadyOutsideDaemonIsNoop(t *testing.T) {
	t.Setenv(envMarker, "")
	os.Unsetenv(envMarker)
	Ready(nil) // must not write to fd 3, which may be anything here
}
