package cli

import (
	"fmt"
	"strings"

	"github.com/dustin/go-humanize"
)

// enumValue is a string flag restricted to a fixed set of values, so a bad
// value fails at parse time with the list of allowed ones (exit 2).
// Matching is case-insensitive; the stored value is the canonical spelling.
type enumValue struct {
	p        *string
	typeName string // placeholder in help, e.g. "mode"
	allowed  []string
}

func newEnum(p *string, typeName string, allowed ...string) *enumValue {
	return &enumValue{p: p, typeName: typeName, allowed: allowed}
}

func (e *enumValue) String() string { return *e.p }
func (e *enumValue) Type() string   { return e.typeName }
func (e *enumValue) Set(s string) error {
	for _, a := range e.allowed {
		if strings.EqualFold(s, a) {
			*e.p = a
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(e.allowed, "|"))
}

func oneOf(s string, allowed []string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

// rateValue is a bandwidth flag in bytes per second: "200MB/s", "1GiB",
// "0" (unlimited). A "/s" suffix is optional.
type rateValue struct{ p *uint64 }

func (r rateValue) String() string {
	if *r.p == 0 {
		return "0"
	}
	return humanize.IBytes(*r.p) + "/s"
}
func (r rateValue) Type() string { return "rate" }
func (r rateValue) Set(s string) error {
	n, err := parseBytes(strings.TrimSuffix(strings.TrimSpace(s), "/s"))
	if err != nil {
		return err
	}
	*r.p = n
	return nil
}

// parseBytes accepts SI (KB, MB, GB) and IEC (KiB, Mi, GiB) suffixes.
func parseBytes(s string) (uint64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("not a size (want e.g. 512MiB, 100GiB, 1.5TB): %q", s)
	}
	return n, nil
}
