package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for blobfs: with BLOBFS_EXEC_MAIN=1
// it runs main() on its own arguments, so exit codes and the split between
// stdout and stderr are checked on a real process without building one.
func TestMain(m *testing.M) {
	if os.Getenv("BLOBFS_EXEC_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		stdout   string
		stderr   string
		noStdout bool // nothing on stdout
	}{
		{args: []string{"--help"}, code: 0, stdout: "Available Commands:"},
		{args: []string{"version"}, code: 0, stdout: "platform:"},
		{args: []string{"mount", "--help"}, code: 0, stdout: "AZURE_STORAGE_ACCESS_KEY"},
		{args: []string{"mount", "/mnt/x", "--container", "data", "--account", "acct1"}, code: 1,
			stderr: "blobfs mount: bad mountpoint: /mnt/x does not exist", noStdout: true},
		{args: []string{"--log-level=loud", "version"}, code: 2, stderr: "debug|info|warn|error", noStdout: true},
		{args: []string{"prefetch", "--parallel", "-1", "x"}, code: 2, stderr: "--parallel -1", noStdout: true},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`, noStdout: true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], tc.args...)
			cmd.Env = append(os.Environ(), "BLOBFS_EXEC_MAIN=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, stdout.String())
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr.String())
			}
			if tc.noStdout && stdout.Len() > 0 {
				t.Errorf("stdout should be empty on error, got:\n%s", stdout.String())
			}
		})
	}
}
