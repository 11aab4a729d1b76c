package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := &debug.BuildInfo{
		GoVersion: "go1.99.0",
		Main:      debug.Module{Path: "github.com/blobfs/blobfs", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"},
			{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
			{Key: "vcs.modified", Value: "true"},
			{Key: "GOOS", Value: "linux"},
			{Key: "GOARCH", Value: "arm64"},
		},
	}
	for _, tc := range []struct {
		name string
		s    stamp
		bi   *debug.BuildInfo
		want Info
	}{
		{
			name: "nothing known",
			want: Info{Version: "devel", Commit: Unknown, Date: Unknown, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH},
		},
		{
			name: "ldflags win",
			s:    stamp{"v1.2.3", "deadbeef", "2026-11-22T00:00:00Z", "false"},
			bi:   vcs,
			want: Info{Version: "v1.2.3", Commit: "deadbeef", Date: "2026-11-22T00:00:00Z", Modified: false, GoVersion: "go1.99.0", OS: "linux", Arch: "arm64"},
		},
		{
			name: "vcs fallback",
			bi:   vcs,
			want: Info{Version: "devel", Commit: "abc123", Date: "2026-01-02T03:04:05Z", Modified: true, GoVersion: "go1.99.0", OS: "linux", Arch: "arm64"},
		},
		{
			name: "go install version",
			bi:   &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}},
			want: Info{Version: "v0.4.0", Commit: Unknown, Date: Unknown, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.s, tc.bi); got != tc.want {
				t.Errorf("resolve() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestGetIsComplete(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Commit == "" || i.Date == "" || i.GoVersion == "" || i.Platform() == "/" {
		t.Fatalf("Get() has empty fields: %+v", i)
	}
}
