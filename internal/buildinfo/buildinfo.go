// Package buildinfo says which blobfs this is: version, commit, build date,
// Go version and platform.
//
// The Makefile stamps Version, Commit, Date and Modified with
// -ldflags "-X github.com/blobfs/blobfs/internal/buildinfo.Version=...".
// A binary built without them (go build, go install, go run) falls back to
// what the Go toolchain recorded in runtime/debug.ReadBuildInfo: the module
// version and, when built with VCS stamping, the vcs.* settings.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strconv"
)

// Values set at link time with -X. Empty means "not stamped".
var (
	// Version is the release version, e.g. "v0.3.0" or a git describe string.
	Version string
	// Commit is the full git commit hash the binary was built from.
	Commit string
	// Date is the build date, RFC 3339 in UTC.
	Date string
	// Modified is "true" when the work tree had uncommitted changes.
	Modified string
)

// Unknown is reported for a field that neither -ldflags nor the toolchain set.
const Unknown = "unknown"

// Info describes one build of blobfs.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

// Platform returns "GOOS/GOARCH".
func (i Info) Platform() string { return i.OS + "/" + i.Arch }

// Get returns the running binary's build information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return resolve(stamp{Version, Commit, Date, Modified}, bi)
}

// stamp holds the -ldflags values.
type stamp struct{ version, commit, date, modified string }

// resolve prefers the link-time stamp, then the toolchain's build info,
// then Unknown. bi may be nil.
func resolve(s stamp, bi *debug.BuildInfo) Info {
	info := Info{
		Version:   s.version,
		Commit:    s.commit,
		Date:      s.date,
		GoVersion: runtime.Version(),
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
	}
	modified, modifiedSet := strconv.ParseBool(s.modified)
	info.Modified = modified
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = kv.Value
				}
			case "vcs.time":
				if info.Date == "" {
					info.Date = kv.Value
				}
			case "vcs.modified":
				if modifiedSet != nil {
					info.Modified = kv.Value == "true"
				}
			case "GOOS":
				info.OS = kv.Value
			case "GOARCH":
				info.Arch = kv.Value
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Commit == "" {
		info.Commit = Unknown
	}
	if info.Date == "" {
		info.Date = Unknown
	}
	return info
}
