package prefetch

import (
	"cmp"
	"math/bits"
	"slices"
	"strconv"
)

// Priority orders fetches: lower values are needed sooner. A filler should
// start every range of one priority before any of the next, and may run
// ranges of one priority in any order and in parallel.
type Priority int

// Priorities, in the order a restoring job reads: the small files that
// tell a loader what to read, then the weights, then optimizer state,
// then the rest (RNG, scheduler, arguments), which is read last and small.
const (
	PriorityMetadata  Priority = 0
	PriorityModel     Priority = 1
	PriorityOptimizer Priority = 2
	PriorityOther     Priority = 3
)

func (p Priority) String() string {
	switch p {
	case PriorityMetadata:
		return "metadata"
	case PriorityModel:
		return "model"
	case PriorityOptimizer:
		return "optimizer"
	case PriorityOther:
		return "other"
	}
	return "priority(" + strconv.Itoa(int(p)) + ")"
}

// Range is one contiguous byte range of one file to fetch.
type Range struct {
	// Name is the file's path from the Tree's root.
	Name string
	Off  int64
	Len  int64
	// Priority says when the restoring job will need these bytes.
	Priority Priority
}

// End is the offset one past the range.
func (r Range) End() int64 { return r.Off + r.Len }

func compareRanges(a, b Range) int {
	return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Off, b.Off), cmp.Compare(a.Len, b.Len))
}

// Coalesce sorts ranges by (Priority, Name, Off) and merges ranges of one
// file and one priority that touch or overlap. Empty ranges are dropped.
func Coalesce(rs []Range) []Range {
	rs = slices.DeleteFunc(slices.Clone(rs), func(r Range) bool { return r.Len <= 0 })
	slices.SortFunc(rs, compareRanges)
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.Name == r.Name && last.Priority == r.Priority && r.Off <= last.End() {
				if r.End() > last.End() {
					last.Len = r.End() - last.Off
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// Total is the number of bytes in rs.
func Total(rs []Range) int64 {
	var n int64
	for _, r := range rs {
		n += r.Len
	}
	return n
}

// SplitBlocks cuts ranges at multiples of block (file offsets), so that
// every piece falls inside one cache block; a filler hands each piece to
// the cache as one block fetch. block <= 0 returns rs unchanged.
func SplitBlocks(rs []Range, block int64) []Range {
	if block <= 0 {
		return rs
	}
	var out []Range
	for _, r := range rs {
		for off := r.Off; off < r.End(); {
			end := min((off/block+1)*block, r.End())
			out = append(out, Range{Name: r.Name, Off: off, Len: end - off, Priority: r.Priority})
			off = end
		}
	}
	return out
}

// share returns part's share of units when split between parts: within
// each priority, units are taken in (Name, Off) order and each goes to the
// part its middle byte falls in when the priority's bytes are laid end to
// end and cut into parts equal pieces. The split is deterministic, the
// shares are disjoint and together are exactly units, each priority is
// split on its own (so that all fetchers work on urgent bytes first), and
// a unit is never cut: units are tensors, DCP items or whole files, or
// block-sized pieces when PlanOptions.BlockSize is set.
func share(units []Range, part, parts int) []Range {
	if parts <= 1 {
		return units
	}
	units = slices.Clone(units)
	slices.SortFunc(units, compareRanges)
	var out []Range
	for i := 0; i < len(units); {
		j := i
		var total int64
		for j < len(units) && units[j].Priority == units[i].Priority {
			total += units[j].Len
			j++
		}
		var cum int64
		for _, u := range units[i:j] {
			mid := cum + u.Len/2
			cum += u.Len
			if total > 0 && scaleDown(mid, int64(parts), total) == int64(part) {
				out = append(out, u)
			}
		}
		i = j
	}
	return out
}

// scaleDown returns floor(a*b/c) for 0 <= a < c and b > 0 without
// overflowing, clamped to b-1.
func scaleDown(a, b, c int64) int64 {
	if a >= c {
		return b - 1
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	q, _ := bits.Div64(hi, lo, uint64(c))
	return min(int64(q), b-1)
}
