// Package mountinfo reads this process's mount table,
// /proc/self/mountinfo: the one parser the mount command, the CSI driver
// and the tests share. It reads the table rather than stat-ing paths
// because stat misses bind mounts of the same filesystem and hangs on a
// FUSE mount whose server died.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// Path is the mount table of this process's mount namespace.
const Path = "/proc/self/mountinfo"

// Mount is one line of the table.
type Mount struct {
	// Dev is the device's "major:minor" (FUSE mounts are "0:N", N being
	// the connection number under /sys/fs/fuse/connections).
	Dev string
	// Point is the mount point, unescaped.
	Point string
	// FSType is the filesystem type ("fuse.blobfs", "ext4", ...).
	FSType string
}

// IsFUSE reports whether the mount is a FUSE filesystem.
func (m Mount) IsFUSE() bool { return m.FSType == "fuse" || strings.HasPrefix(m.FSType, "fuse.") }

// Read returns every mount, in table order (a later mount on the same
// point is on top).
func Read() ([]Mount, error) {
	f, err := os.Open(Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(f)
}

func parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source super
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		m := Mount{Dev: fields[2], Point: Unescape(fields[4])}
		for i := 6; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				m.FSType = fields[i+1]
				break
			}
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", Path, err)
	}
	return out, nil
}

// IsMountPoint reports whether path (absolute, clean) is a mount point.
func IsMountPoint(path string) (bool, error) {
	ms, err := Read()
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.Point == path {
			return true, nil
		}
	}
	return false, nil
}

// FUSEUnder lists the FUSE mounts at or below root.
func FUSEUnder(root string) []Mount {
	ms, _ := Read()
	var out []Mount
	for _, m := range ms {
		if m.IsFUSE() && (m.Point == root || strings.HasPrefix(m.Point, root+"/")) {
			out = append(out, m)
		}
	}
	return out
}

// Unescape undoes the kernel's octal escapes of ' ', '\t', '\n' and '\\'
// in mountinfo paths ("\040" for a space).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
