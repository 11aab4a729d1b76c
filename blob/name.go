package blob

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxNameLength is the service's limit on a blob name, in characters.
const MaxNameLength = 1024

// ValidateName rejects names the service would refuse or that cannot map to
// a path: empty, too long, invalid UTF-8, leading or doubled slashes, "." or
// ".." segments.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty blob name: %w", ErrInvalid)
	case utf8.RuneCountInString(name) > MaxNameLength:
		return fmt.Errorf("blob name longer than %d characters: %w", MaxNameLength, ErrInvalid)
	case !utf8.ValidString(name):
		return fmt.Errorf("blob name %q is not valid UTF-8: %w", name, ErrInvalid)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("blob name %q starts with '/': %w", name, ErrInvalid)
	}
	for _, seg := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("blob name %q has an empty, '.' or '..' segment: %w", name, ErrInvalid)
		}
	}
	return nil
}
