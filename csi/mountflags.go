package csi

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/blobfs/blobfs/internal/config"
)

// Mount options arrive as VolumeCapability.Mount.MountFlags: the PV's or
// StorageClass's mountOptions, one list entry each. blob-csi-driver users
// write BlobFuse2 command-line flags there ("-o allow_other",
// "--file-cache-timeout-in-seconds=120", "--use-attr-cache=true"), plain
// mount(8) users write FUSE options ("ro", "uid=1000"). Every entry is
// translated through an allowlist into config.Mount fields; anything else
// is refused with the option's name (never its value, which might be a
// pasted secret). The driver never forwards raw options to a command line.

// fuseOption applies one "-o" style option; v is "" for a bare option.
type fuseOption func(m *config.Mount, v string) error

// fuseOptions are the FUSE/mount(8) options blobfs understands.
var fuseOptions = map[string]fuseOption{
	"allow_other": flagOnly(func(m *config.Mount) { m.FS.AllowOther = true }),
	"ro":          flagOnly(func(m *config.Mount) { m.FS.ReadOnly = true }),
	"rw":          flagOnly(func(m *config.Mount) {}),
	"direct_io":   flagOnly(func(m *config.Mount) { m.FS.DirectIO = true }),
	// blobfs mounts over non-empty directories and always lets the kernel
	// check permissions, so these two are what it does anyway.
	"nonempty":            flagOnly(func(m *config.Mount) {}),
	"default_permissions": flagOnly(func(m *config.Mount) {}),
	"uid":                 withValue(func(m *config.Mount, v string) error { return parseID(&m.FS.UID, v) }),
	"gid":                 withValue(func(m *config.Mount, v string) error { return parseID(&m.FS.GID, v) }),
	"umask":               withValue(func(m *config.Mount, v string) error { return parseUmask(&m.FS.Umask, v) }),
	"attr_timeout":        withValue(func(m *config.Mount, v string) error { return parseSeconds(&m.FS.AttrTTL, v) }),
	"entry_timeout":       withValue(func(m *config.Mount, v string) error { return parseSeconds(&m.FS.EntryTTL, v) }),
	"negative_timeout":    withValue(func(m *config.Mount, v string) error { return parseSeconds(&m.FS.NegativeTTL, v) }),
}

// longFlag applies one "--name[=value]" flag; has says whether "=value"
// was given.
type longFlag struct {
	// bool flags accept "--x", "--x=true" and "--x=false"; others need a value.
	isBool bool
	set    func(m *config.Mount, v string) error
}

func boolFlag(set func(m *config.Mount, b bool)) longFlag {
	return longFlag{isBool: true, set: func(m *config.Mount, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false")
		}
		set(m, b)
		return nil
	}}
}

func valueFlag(set func(m *config.Mount, v string) error) longFlag {
	return longFlag{set: set}
}

// acceptedBool is a BlobFuse2 flag whose behaviour blobfs always has.
var acceptedBool = boolFlag(func(*config.Mount, bool) {})

// longFlags are the BlobFuse2 (and blobfs) command-line flags blobfs
// understands as mount options.
var longFlags = map[string]longFlag{
	"read-only":         boolFlag(func(m *config.Mount, b bool) { m.FS.ReadOnly = b }),
	"allow-other":       boolFlag(func(m *config.Mount, b bool) { m.FS.AllowOther = b }),
	"direct-io":         boolFlag(func(m *config.Mount, b bool) { m.FS.DirectIO = b }),
	"ignore-interrupts": boolFlag(func(m *config.Mount, b bool) { m.FS.IgnoreInterrupts = b }),
	"fetch-at-open-mb": valueFlag(func(m *config.Mount, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > config.MaxFetchAtOpenMB {
			return fmt.Errorf("want 0..%d", config.MaxFetchAtOpenMB)
		}
		m.Cache.FetchAtOpenMB = n
		return nil
	}),
	"passthrough": valueFlag(func(m *config.Mount, v string) error {
		if v != "auto" && v != "on" && v != "off" {
			return fmt.Errorf("want auto, on or off")
		}
		m.FS.Passthrough = v
		return nil
	}),
	"no-symlinks": boolFlag(func(m *config.Mount, b bool) { m.FS.NoSymlinks = b }),
	"uid":         valueFlag(func(m *config.Mount, v string) error { return parseID(&m.FS.UID, v) }),
	"gid":         valueFlag(func(m *config.Mount, v string) error { return parseID(&m.FS.GID, v) }),
	"umask":       valueFlag(func(m *config.Mount, v string) error { return parseUmask(&m.FS.Umask, v) }),

	"attr-timeout":       valueFlag(func(m *config.Mount, v string) error { return parseSeconds(&m.FS.AttrTTL, v) }),
	"entry-timeout":      valueFlag(func(m *config.Mount, v string) error { return parseSeconds(&m.FS.EntryTTL, v) }),
	"negative-timeout":   valueFlag(func(m *config.Mount, v string) error { return parseSeconds(&m.FS.NegativeTTL, v) }),
	"attr-cache-timeout": valueFlag(func(m *config.Mount, v string) error { return parseSeconds(&m.FS.ListTTL, v) }),
	// blobfs caches attributes and listings always; turning the cache off
	// means trusting nothing it saw.
	"use-attr-cache": boolFlag(func(m *config.Mount, b bool) {
		if !b {
			m.FS.ListTTL = 0
		}
	}),
	// BlobFuse's file cache timeout bounds how long a cached copy is
	// served before the blob is looked at again. blobfs's block cache is
	// keyed by ETag and never serves a stale block of a blob it has
	// re-checked, so the equivalent knob is how long it trusts the
	// attributes (and so the ETag) it saw: ListTTL.
	"file-cache-timeout-in-seconds": valueFlag(func(m *config.Mount, v string) error { return parseSeconds(&m.FS.ListTTL, v) }),
	"file-cache-timeout":            valueFlag(func(m *config.Mount, v string) error { return parseSeconds(&m.FS.ListTTL, v) }),
	"cache-size-mb":                 valueFlag(func(m *config.Mount, v string) error { return parseMB(&m.Cache.DiskSizeMB, v) }),

	// blobfs is a block cache; BlobFuse2's switch to one is a no-op.
	"block-cache":             acceptedBool,
	"block-cache-block-size":  valueFlag(func(m *config.Mount, v string) error { return parseMB(&m.Cache.BlockSizeMB, v) }),
	"block-cache-pool-size":   valueFlag(func(m *config.Mount, v string) error { return parseMB(&m.Cache.MemSizeMB, v) }),
	"block-cache-disk-size":   valueFlag(func(m *config.Mount, v string) error { return parseMB(&m.Cache.DiskSizeMB, v) }),
	"block-cache-prefetch":    valueFlag(func(m *config.Mount, v string) error { return parseCount(&m.Cache.Prefetch, v) }),
	"block-cache-parallelism": valueFlag(func(m *config.Mount, v string) error { return parseCount(&m.Cache.Parallelism, v) }),

	"log-level": valueFlag(func(m *config.Mount, v string) error {
		if _, err := config.ParseLevel(v); err != nil {
			return fmt.Errorf("want LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR or LOG_OFF")
		}
		m.Log.Level = v
		return nil
	}),

	// Behaviour blobfs always has, or BlobFuse2 tuning with no meaning here.
	"virtual-directory":       acceptedBool,
	"disable-writeback-cache": acceptedBool,
	"ignore-open-flags":       acceptedBool,
	"cancel-list-on-mount-seconds": valueFlag(func(_ *config.Mount, v string) error {
		_, err := strconv.ParseUint(v, 10, 32)
		return err
	}),
}

// refusedFlags are flags that would let a volume's author choose paths or
// a different container on the node, which the driver controls. They get
// a specific message instead of "not supported".
var refusedFlags = map[string]string{
	"config-file":      "the driver writes the mount's configuration itself",
	"tmp-path":         "the node cache directory is set on the driver (--cache-dir)",
	"block-cache-path": "the node cache directory is set on the driver (--cache-dir)",
	"cache-dir":        "the node cache directory is set on the driver (--cache-dir)",
	"container-name":   "use volumeAttributes.containerName or the volume id",
	"account-name":     "use volumeAttributes.storageAccount or the volume id",
	"subdirectory":     "use volumeAttributes.subDir or the volume id",
	"endpoint":         "use volumeAttributes.endpoint or storageEndpointSuffix",
	"log-file-path":    "mount logs are kept by the driver",
	"foreground":       "the driver manages the mount process",
}

func flagOnly(set func(m *config.Mount)) fuseOption {
	return func(m *config.Mount, v string) error {
		if v != "" {
			return fmt.Errorf("takes no value")
		}
		set(m)
		return nil
	}
}

func withValue(set func(m *config.Mount, v string) error) fuseOption {
	return func(m *config.Mount, v string) error {
		if v == "" {
			return fmt.Errorf("needs a value")
		}
		return set(m, v)
	}
}

// applyMountFlags applies every mount option in flags to m. Each entry may
// hold several whitespace-separated tokens ("-o allow_other") because that
// is how blob-csi-driver's documentation writes them.
func applyMountFlags(m *config.Mount, flags []string) error {
	var toks []string
	for _, f := range flags {
		toks = append(toks, strings.Fields(f)...)
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t == "-o":
			if i+1 == len(toks) {
				return fmt.Errorf("mount option -o: needs a list of options: %w", ErrInvalid)
			}
			i++
			if err := applyFUSEOptions(m, toks[i]); err != nil {
				return err
			}
		case strings.HasPrefix(t, "-o") && !strings.HasPrefix(t, "--"):
			if err := applyFUSEOptions(m, t[2:]); err != nil {
				return err
			}
		case strings.HasPrefix(t, "--"):
			name, val, hasVal := strings.Cut(t[2:], "=")
			lf, ok := longFlags[name]
			if !ok {
				return refuse("--"+name, refusedFlags[name])
			}
			if !hasVal {
				if lf.isBool {
					val = "true"
				} else if i+1 < len(toks) && !strings.HasPrefix(toks[i+1], "-") {
					i++
					val = toks[i]
				} else {
					return fmt.Errorf("mount option --%s: needs a value: %w", name, ErrInvalid)
				}
			}
			if err := lf.set(m, val); err != nil {
				return fmt.Errorf("mount option --%s=%s: %v: %w", name, val, err, ErrInvalid)
			}
		case strings.HasPrefix(t, "-"):
			name, _, _ := strings.Cut(t, "=")
			return refuse(name, "")
		default:
			// A bare entry is a mount(8)-style option list: "ro", "uid=1000".
			if err := applyFUSEOptions(m, t); err != nil {
				return err
			}
		}
	}
	return nil
}

func applyFUSEOptions(m *config.Mount, list string) error {
	for _, o := range strings.Split(list, ",") {
		if o == "" {
			continue
		}
		name, val, _ := strings.Cut(o, "=")
		set, ok := fuseOptions[name]
		if !ok {
			return refuse(name, "")
		}
		if err := set(m, val); err != nil {
			return fmt.Errorf("mount option %s: %v: %w", o, err, ErrInvalid)
		}
	}
	return nil
}

// refuse names an option that is not on the allowlist. Only the name is
// echoed: an unknown option's value may be a secret pasted in the wrong
// place.
func refuse(name, why string) error {
	if why != "" {
		return fmt.Errorf("mount option %s is not allowed: %s: %w", name, why, ErrInvalid)
	}
	return fmt.Errorf("mount option %s is not supported by blobfs (see the csi package documentation for the allowlist): %w", name, ErrInvalid)
}

// parseID parses a uid or gid.
func parseID(dst *int64, v string) error {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == math.MaxUint32 {
		return fmt.Errorf("want a numeric id 0..4294967294")
	}
	*dst = int64(n)
	return nil
}

// parseUmask parses an octal umask like 022 or 0022.
func parseUmask(dst *uint32, v string) error {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("want an octal mask like 022")
	}
	*dst = uint32(n)
	return nil
}

// parseSeconds parses a whole or fractional number of seconds, as FUSE and
// BlobFuse2 write timeouts.
func parseSeconds(dst *time.Duration, v string) error {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 365*24*3600 || math.IsNaN(f) {
		return fmt.Errorf("want a number of seconds")
	}
	*dst = time.Duration(f * float64(time.Second))
	return nil
}

// parseMB parses a size in MB.
func parseMB(dst *int64, v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > 1<<40 {
		return fmt.Errorf("want a number of MB")
	}
	*dst = n
	return nil
}

// parseCount parses a non-negative count.
func parseCount(dst *int, v string) error {
	n, err := strconv.ParseUint(v, 10, 31)
	if err != nil {
		return fmt.Errorf("want a non-negative integer")
	}
	*dst = int(n)
	return nil
}
