package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/blobfs/blobfs/internal/buildinfo"
	"github.com/blobfs/blobfs/internal/config"
)

var testBuild = buildinfo.Info{
	Version: "v9.8.7", Commit: "0123456789abcdef", Date: "2026-11-22T00:00:00Z",
	Modified: true, GoVersion: "go1.26.8", OS: "linux", Arch: "amd64",
}

// execute runs the command tree in-process with a fixed environment and
// build, and returns the exit code and both outputs.
func execute(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	d := &Deps{
		Stdout: &out,
		Stderr: &errb,
		LookupEnv: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		},
		Build: func() buildinfo.Info { return testBuild },
	}
	code = Execute(context.Background(), NewRootCmd(d), args, &errb)
	return code, out.String(), errb.String()
}

// writeFile writes a file in a fresh temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ourCommands are the blobfs subcommands (not cobra's help/completion).
var ourCommands = []string{"mount", "unmount", "prefetch", "csi", "bootstrap", "version"}

func TestCommandsHaveHelpText(t *testing.T) {
	root := NewRootCmd(&Deps{Build: func() buildinfo.Info { return testBuild }})
	check := func(c *cobra.Command) {
		if strings.TrimSpace(c.Short) == "" || strings.TrimSpace(c.Long) == "" || strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s: Short, Long and Example must all be set", c.CommandPath())
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden && strings.TrimSpace(f.Usage) == "" {
				t.Errorf("%s --%s: no usage text", c.CommandPath(), f.Name)
			}
		})
	}
	check(root)
	found := map[string]bool{}
	for _, c := range root.Commands() {
		if c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		found[c.Name()] = true
		check(c)
	}
	for _, name := range ourCommands {
		if !found[name] {
			t.Errorf("subcommand %q missing", name)
		}
	}
	if len(found) != len(ourCommands) {
		t.Errorf("subcommands = %v, want exactly %v (update ourCommands and the README)", found, ourCommands)
	}
}

func TestHelp(t *testing.T) {
	root := NewRootCmd(&Deps{Build: func() buildinfo.Info { return testBuild }})
	// Help shows Long; its first line identifies the command.
	firstLine := func(c *cobra.Command) string { return strings.SplitN(c.Long, "\n", 2)[0] }
	long := map[string]string{"": firstLine(root)}
	for _, c := range root.Commands() {
		long[c.Name()] = firstLine(c)
	}
	var cases [][]string
	for _, name := range ourCommands {
		cases = append(cases, []string{name, "--help"}, []string{name, "-h"}, []string{"help", name})
	}
	cases = append(cases, []string{"--help"}, []string{"help"}, []string{})
	for _, args := range cases {
		name := ""
		if len(args) > 0 && args[0] != "help" && args[0] != "--help" {
			name = args[0]
		} else if len(args) == 2 {
			name = args[1]
		}
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := execute(t, nil, args...)
			if code != ExitOK {
				t.Fatalf("exit %d, stderr:\n%s", code, errOut)
			}
			if !strings.Contains(out, "Usage:") || !strings.Contains(out, "Examples:") {
				t.Errorf("help lacks Usage/Examples:\n%s", out)
			}
			if !strings.Contains(out, long[name]) {
				t.Errorf("help does not show %q:\n%s", long[name], out)
			}
		})
	}
	// The root help lists every subcommand.
	_, out, _ := execute(t, nil, "--help")
	for _, name := range ourCommands {
		if !strings.Contains(out, "\n  "+name+" ") {
			t.Errorf("root help does not list %q:\n%s", name, out)
		}
	}
}

func TestMountHelpSaysNoSecretFlags(t *testing.T) {
	_, out, _ := execute(t, nil, "mount", "--help")
	for _, want := range []string{"AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_FEDERATED_TOKEN_FILE",
		"never go on the command line", "--container-name", "--config-file"} {
		if !strings.Contains(out, want) {
			t.Errorf("mount help lacks %q", want)
		}
	}
	for _, s := range secretFlags {
		if strings.Contains(out, "--"+s.name) {
			t.Errorf("mount help advertises secret flag --%s", s.name)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	mount := []string{"mount", "/mnt/x", "--account", "acct1", "--container", "data"}
	ckpt := []string{"prefetch", "--checkpoint", "/mnt/c"}
	boot := []string{"bootstrap", "--account", "acct1", "--container", "data",
		"--client-id", "11111111-2222-3333-4444-555555555555", "--tenant-id", "66666666-7777-8888-9999-000000000000"}
	with := func(base []string, extra ...string) []string { return append(append([]string{}, base...), extra...) }
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    string // substring of stderr
		notWant string // must not appear anywhere (secrets)
	}{
		{name: "unknown command", args: []string{"mnt"}, want: `unknown command "mnt" (did you mean "mount"?)`},
		{name: "unknown flag", args: []string{"version", "--bogus"}, want: "unknown flag: --bogus"},
		{name: "bad log level", args: []string{"--log-level", "verbose", "version"}, want: "debug|info|warn|error"},
		{name: "bad log format", args: []string{"--log-format=xml", "version"}, want: "text|json"},
		{name: "version output", args: []string{"version", "-o", "yaml"}, want: "text|json"},
		{name: "version args", args: []string{"version", "extra"}, want: `unexpected argument "extra"`},

		{name: "mount no mountpoint", args: []string{"mount", "--container", "data"}, want: "expected MOUNTPOINT"},
		{name: "mount two mountpoints", args: with(mount, "/other"), want: "expected MOUNTPOINT"},
		{name: "mount no container", args: []string{"mount", "/m", "--account", "acct1"}, want: "no container"},
		{name: "mount no account", args: []string{"mount", "/m", "--container", "data"}, want: "no storage account"},
		{name: "mount bad container", args: with(mount, "--container", "Bad_Name"), want: `container name "Bad_Name"`},
		{name: "mount bad container alias", args: with(mount, "--container-name", "a--b"), want: `container name "a--b"`},
		{name: "mount bad account", args: with(mount, "--account", "UPPER"), want: `storage account name "UPPER"`},
		{name: "mount bad env container", args: []string{"mount", "/m", "--account", "acct1"},
			env: map[string]string{"AZURE_STORAGE_ACCOUNT_CONTAINER": "x"}, want: `container name "x"`},
		{name: "mount bad auth mode", args: with(mount, "--auth-mode", "password"), want: `auth mode "password"`},
		{name: "mount bad env auth mode", args: mount, env: map[string]string{"AZURE_STORAGE_AUTH_TYPE": "password"}, want: `auth mode "password"`},
		{name: "mount bad uid", args: with(mount, "--uid", "abc"), want: `"--uid"`},
		{name: "mount uid range", args: with(mount, "--gid", "-5"), want: "out of range"},
		{name: "mount bad umask", args: with(mount, "--umask", "999"), want: "octal mode"},
		{name: "mount big umask", args: with(mount, "--umask", "1777"), want: "octal mode"},
		{name: "mount bad size", args: with(mount, "--cache-size-mb", "lots"), want: `"--cache-size-mb"`},
		{name: "mount bad ttl", args: with(mount, "--attr-timeout", "soon"), want: `"--attr-timeout"`},
		{name: "mount negative ttl", args: with(mount, "--negative-timeout", "-1s"), want: "must not be negative"},
		{name: "mount missing config file", args: with(mount, "--config-file", "/nonexistent/blobfs.yaml"), want: "/nonexistent/blobfs.yaml"},
		{name: "mount malformed config file", args: with(mount, "--config-file", writeFile(t, "bad.yaml", "storage: [unclosed\n")), want: "not valid YAML"},
		{name: "mount bad metrics addr", args: with(mount, "--metrics-addr", "9090"), want: "HOST:PORT"},
		{name: "mount bad endpoint", args: with(mount, "--endpoint", "ftp://x"), want: "scheme must be https"},
		{name: "mount SAS in endpoint", args: with(mount, "--endpoint", "https://a.blob.core.windows.net/?sv=1&sig=SUPERSECRET"),
			want: "never in argv", notWant: "SUPERSECRET"},
		{name: "mount account key flag", args: with(mount, "--account-key", "SUPERSECRET"), want: "AZURE_STORAGE_ACCESS_KEY", notWant: "SUPERSECRET"},
		{name: "mount sas flag", args: with(mount, "--sas-token=SUPERSECRET"), want: "AZURE_STORAGE_SAS_TOKEN", notWant: "SUPERSECRET"},

		{name: "unmount no args", args: []string{"unmount"}, want: "expected MOUNTPOINT"},
		{name: "unmount bad flag", args: []string{"unmount", "/m", "--force"}, want: "unknown flag: --force"},

		{name: "prefetch nothing", args: []string{"prefetch"}, want: "nothing to prefetch"},
		{name: "prefetch parallel", args: []string{"prefetch", "-p", "0", "/m/x"}, want: "--parallel 0"},
		{name: "prefetch check pin", args: []string{"prefetch", "--check", "--pin", "/m/x"}, want: "cannot --pin"},
		{name: "prefetch rank range", args: with(ckpt, "--rank", "8", "--world-size", "8"), want: "--rank 8"},
		{name: "prefetch world size", args: with(ckpt, "--world-size", "0"), want: "--world-size 0"},
		{name: "prefetch rank without checkpoint", args: []string{"prefetch", "/m/x", "--rank", "1", "--world-size", "2"}, want: "only with --checkpoint"},
		{name: "prefetch bad rate", args: []string{"prefetch", "/m/x", "--max-bandwidth", "fast"}, want: "not a size"},

		{name: "csi bad mode", args: []string{"csi", "--node-id", "n1", "--mode", "both"}, want: "node|controller|all"},
		{name: "csi tcp endpoint", args: []string{"csi", "--node-id", "n1", "--endpoint", "tcp://127.0.0.1:1"}, want: "unix:///ABSOLUTE/PATH"},
		{name: "csi relative socket", args: []string{"csi", "--node-id", "n1", "--endpoint", "unix://csi.sock"}, want: "unix:///ABSOLUTE/PATH"},
		{name: "csi no node id", args: []string{"csi", "--mode", "node"}, want: "--node-id: required"},
		{name: "csi args", args: []string{"csi", "--mode", "controller", "extra"}, want: "unexpected argument"},

		{name: "bootstrap nothing", args: []string{"bootstrap"}, want: "--account: required"},
		{name: "bootstrap bad tenant", args: with(boot, "--tenant-id", "contoso"), want: `--tenant-id "contoso": want a GUID`},
		{name: "bootstrap bad namespace", args: with(boot, "--namespace", "Ray_NS"), want: `--namespace "Ray_NS"`},
		{name: "bootstrap workers", args: with(boot, "--gpu-workers", "0"), want: "--gpu-workers 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := execute(t, tc.env, tc.args...)
			if code != ExitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitUsage, errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, errOut)
			}
			if !strings.Contains(errOut, "--help' for usage.") {
				t.Errorf("stderr does not point at --help:\n%s", errOut)
			}
			if tc.notWant != "" && (strings.Contains(errOut, tc.notWant) || strings.Contains(out, tc.notWant)) {
				t.Errorf("output echoes %q:\n%s%s", tc.notWant, out, errOut)
			}
		})
	}
}

func TestNotImplemented(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		env   map[string]string
		issue int
	}{
		{args: []string{"mount", "/mnt/data", "--account", "acct1", "--container", "data"}, issue: 3},
		{args: []string{"mount", "/mnt/data", "--container-name", "data", "--endpoint", "http://127.0.0.1:10000/devstoreaccount1",
			"--auth-mode", "KEY", "--read-only", "--uid", "1000", "--gid", "1000", "--umask", "0027", "--allow-other", "--foreground",
			"--cache-dir", "/nvme/blobfs", "--cache-size-mb", "200000", "--attr-timeout", "1m", "--entry-timeout", "1m",
			"--negative-timeout", "0", "--metrics-addr", "127.0.0.1:9090"}, issue: 3},
		{args: []string{"mount", "/mnt/data"}, env: map[string]string{
			"AZURE_STORAGE_ACCOUNT": "acct1", "AZURE_STORAGE_ACCOUNT_CONTAINER": "data", "AZURE_STORAGE_AUTH_TYPE": "MSI"}, issue: 3},
		{args: []string{"mount", "/mnt/data", "--config-file", writeFile(t, "config.yaml",
			"azstorage:\n  type: block\n  account-name: acct1\n  container: data\n  mode: msi\n")}, issue: 3},
		// Flags beat the environment: a bad env value is ignored when the flag is given.
		{args: []string{"mount", "/mnt/data", "--account", "acct1", "--container", "data"},
			env: map[string]string{"AZURE_STORAGE_ACCOUNT_CONTAINER": "BAD", "AZURE_STORAGE_ACCOUNT": "BAD"}, issue: 3},
		{args: []string{"unmount", "/mnt/data"}, issue: 3},
		{args: []string{"unmount", "-l", "/mnt/data"}, issue: 3},
		// prefetch is implemented: see prefetch_test.go.
		// bootstrap is implemented: see bootstrap_test.go.
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := execute(t, tc.env, tc.args...)
			if code != ExitError {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitError, errOut)
			}
			want := fmt.Sprintf("blobfs %s: not implemented yet (tracked in issue #%d)\n", tc.args[0], tc.issue)
			// mount and unmount are implemented: settings parse and
			// validate, then the missing mountpoint is the runtime error.
			switch tc.args[0] {
			case "mount":
				want = "blobfs mount: bad mountpoint: /mnt/data does not exist or cannot be reached (create the directory first): stat /mnt/data: no such file or directory\n"
			case "unmount":
				want = "blobfs unmount: /mnt/data is not mounted\n"
			}
			if errOut != want {
				t.Errorf("stderr = %q, want %q", errOut, want)
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}
}

func TestNotImplementedErrorType(t *testing.T) {
	// Every command is implemented now; the type stays for the next one.
	err := fmt.Errorf("run: %w", notImplemented("prefetch", issuePrefetch))
	var ni *NotImplementedError
	if !errors.As(err, &ni) || ni.Command != "prefetch" || ni.Issue != issuePrefetch {
		t.Fatalf("err = %#v, want *NotImplementedError{prefetch, %d}", err, issuePrefetch)
	}
	if IsUsage(err) || ExitCode(err) != ExitError {
		t.Errorf("not-implemented must be a runtime error, got exit %d", ExitCode(err))
	}
}

func TestVersion(t *testing.T) {
	code, out, errOut := execute(t, nil, "version", "--output", "json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got buildinfo.Info
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("version --output json is not the Info JSON: %v\n%s", err, out)
	}
	if got != testBuild {
		t.Errorf("json = %+v, want %+v", got, testBuild)
	}
	var raw map[string]any
	_ = json.Unmarshal([]byte(out), &raw)
	for _, k := range []string{"version", "commit", "date", "goVersion", "os", "arch", "modified"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("json lacks key %q", k)
		}
	}

	code, out, _ = execute(t, nil, "version")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"blobfs v9.8.7", "0123456789abcdef (modified)", "2026-11-22T00:00:00Z", "go1.26.8", "linux/amd64"} {
		if !strings.Contains(out, want) {
			t.Errorf("version text lacks %q:\n%s", want, out)
		}
	}
	if _, out, _ = execute(t, nil, "--version"); strings.TrimSpace(out) != "blobfs v9.8.7" {
		t.Errorf("--version = %q", out)
	}
}

func TestLogFlags(t *testing.T) {
	for _, tc := range []struct {
		level, format string
		debug         bool
		json          bool
	}{
		{"debug", "json", true, true},
		{"debug", "text", true, false},
		{"info", "text", false, false},
		{"ERROR", "JSON", false, true},
	} {
		// runMount logs its options at debug level before saying it is not
		// implemented; that is the line to look for.
		code, _, errOut := execute(t, nil, "--log-level", tc.level, "--log-format", tc.format,
			"mount", "/m", "--account", "acct1", "--container", "data")
		if code != ExitError {
			t.Fatalf("%s/%s: exit %d:\n%s", tc.level, tc.format, code, errOut)
		}
		logged := strings.Contains(errOut, "mount options valid")
		if logged != tc.debug {
			t.Errorf("%s/%s: debug line logged = %v, want %v:\n%s", tc.level, tc.format, logged, tc.debug, errOut)
		}
		if tc.debug && tc.json != strings.Contains(errOut, `{"time":`) {
			t.Errorf("%s/%s: wrong log format:\n%s", tc.level, tc.format, errOut)
		}
	}
}

// TestMainInProcess runs the real entry point, with the process's own
// environment and build info, without building a binary.
func TestMainInProcess(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--help"}, ExitOK, "Available Commands:"},
		{[]string{"version", "-o", "json"}, ExitOK, `"goVersion"`},
		{[]string{"nope"}, ExitUsage, ""},
		{[]string{"unmount", "/m"}, ExitError, ""},
		{nil, ExitOK, "Usage:"}, // nil args must not fall back to os.Args
	} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), tc.args, &out, &errb); code != tc.code {
			t.Errorf("Main(%q) = %d, want %d; stderr:\n%s", tc.args, code, tc.code, errb.String())
		}
		if !strings.Contains(out.String(), tc.out) {
			t.Errorf("Main(%q) stdout lacks %q:\n%s", tc.args, tc.out, out.String())
		}
	}
}

func TestDefaultsValidate(t *testing.T) {
	m := MountOptions{Mountpoint: "/m", Config: config.Default()}
	m.Config.Storage.Account, m.Config.Storage.Container = "acct1", "data"
	p := DefaultPrefetchOptions()
	p.Paths = []string{"/m/x"}
	c := DefaultCSIOptions()
	c.NodeID = "n1"
	b := DefaultBootstrapOptions()
	b.ConfigFile = "c.yaml"
	for name, v := range map[string]interface{ Validate() error }{
		"mount": m, "prefetch": p, "csi": c, "bootstrap": b, "global": DefaultGlobalOptions(),
		"unmount": UnmountOptions{Mountpoint: "/m"}, "version": VersionOptions{Output: "text"},
	} {
		if err := v.Validate(); err != nil {
			t.Errorf("%s defaults: %v", name, err)
		}
	}
}
