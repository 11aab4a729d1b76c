package fs

import (
	"fmt"
	"path"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/blobfs/blobfs/blob"
)

// Path ↔ blob name mapping.
//
// The mount root is the container; a path a/b/c below it is the blob
// "a/b/c", and directory a/b is the prefix "a/b/". Blob names never start
// with "/" and a directory's own name carries no trailing slash inside
// the volume (its marker blob is "a/b", as BlobFuse2 writes it).

// maxComponent is NAME_MAX: the longest single path component we create
// or show. statfs reports it as f_namelen.
const maxComponent = 255

// childName is the blob name of component comp inside directory dir.
func childName(dir, comp string) string {
	if dir == "" {
		return comp
	}
	return dir + "/" + comp
}

// parentOf is the directory holding name ("" for the root).
func parentOf(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return ""
}

// dirPrefix is the listing prefix of directory dir.
func dirPrefix(dir string) string {
	if dir == "" {
		return ""
	}
	return dir + "/"
}

// underDir reports whether name lies strictly inside directory dir.
func underDir(name, dir string) bool {
	if dir == "" {
		return name != ""
	}
	return strings.HasPrefix(name, dir+"/")
}

// checkComponent validates one path component handed in by the kernel for
// a name we are about to create: it must be a possible blob-name segment.
func checkComponent(comp string) error {
	switch {
	case comp == "" || comp == "." || comp == "..":
		return fmt.Errorf("name %q: %w", comp, syscall.EINVAL)
	case len(comp) > maxComponent:
		return fmt.Errorf("name of %d bytes: %w", len(comp), syscall.ENAMETOOLONG)
	case strings.ContainsAny(comp, "/\x00"):
		return fmt.Errorf("name %q: %w", comp, syscall.EINVAL)
	case strings.ContainsRune(comp, '\\'):
		// The service folds '\' into '/' in blob names, so "a\b" would
		// silently alias "a/b": refuse it (and a lookup finds nothing).
		return fmt.Errorf("name %q contains a backslash, which Blob storage treats as '/': %w", comp, syscall.EINVAL)
	case !utf8.ValidString(comp):
		// Blob names are Unicode; bytes that are not UTF-8 cannot be stored.
		return fmt.Errorf("name %q is not UTF-8: %w", comp, syscall.EINVAL)
	}
	return nil
}

// checkName validates a whole blob name built from checked components.
func checkName(name string) error {
	if utf8.RuneCountInString(name) > blob.MaxNameLength {
		return fmt.Errorf("blob name of %d characters (limit %d): %w",
			utf8.RuneCountInString(name), blob.MaxNameLength, syscall.ENAMETOOLONG)
	}
	return nil
}

// newChild is childName after both checks: the name a create, mkdir or
// rename target will get.
func newChild(dir, comp string) (string, error) {
	if err := checkComponent(comp); err != nil {
		return "", err
	}
	name := childName(dir, comp)
	if err := checkName(name); err != nil {
		return "", err
	}
	return name, nil
}

// showable reports whether a component found in a listing can appear in a
// directory: blob names may hold empty, "." or ".." segments ("a//b",
// "a/./b") or segments longer than NAME_MAX, none of which a POSIX path
// can name.
func showable(comp string) bool {
	return comp != "" && comp != "." && comp != ".." &&
		len(comp) <= maxComponent && !strings.ContainsAny(comp, "/\x00\\")
}

// pathToBlob maps a slash path relative to the mount root ("/a/b", "a/b",
// "" or "/" for the root) to a blob name. It rejects paths that climb out
// of the root or name something no blob can be.
func pathToBlob(p string) (string, error) {
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("path %q: %w", p, syscall.EINVAL)
	}
	clean := path.Clean("/" + p)
	if clean == "/" {
		return "", nil
	}
	name := clean[1:]
	for _, seg := range strings.Split(name, "/") {
		if err := checkComponent(seg); err != nil {
			return "", err
		}
	}
	if err := checkName(name); err != nil {
		return "", err
	}
	return name, nil
}

// blobToPath maps a blob name to its path below the mount root, reporting
// false for names no path reaches (see showable) and for names ending in
// "/" (directory placeholders written by other tools, shown as the
// directory itself, not as a file).
func blobToPath(name string) (string, bool) {
	if name == "" || strings.HasSuffix(name, "/") {
		return "", false
	}
	for _, seg := range strings.Split(name, "/") {
		if !showable(seg) {
			return "", false
		}
	}
	return name, true
}
