package prefetch

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestCoalesce(t *testing.T) {
	in := []Range{
		{Name: "b", Off: 10, Len: 5, Priority: PriorityModel},
		{Name: "a", Off: 0, Len: 10, Priority: PriorityModel},
		{Name: "a", Off: 10, Len: 10, Priority: PriorityModel}, // adjacent
		{Name: "a", Off: 15, Len: 2, Priority: PriorityModel},  // inside
		{Name: "a", Off: 0, Len: 8, Priority: PriorityMetadata},
		{Name: "b", Off: 16, Len: 4, Priority: PriorityModel}, // gap of 1
		{Name: "c", Off: 3, Len: 0, Priority: PriorityOther},  // empty
	}
	want := []Range{
		{Name: "a", Off: 0, Len: 8, Priority: PriorityMetadata},
		{Name: "a", Off: 0, Len: 20, Priority: PriorityModel},
		{Name: "b", Off: 10, Len: 5, Priority: PriorityModel},
		{Name: "b", Off: 16, Len: 4, Priority: PriorityModel},
	}
	if got := Coalesce(in); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", fmtRanges(got), fmtRanges(want))
	}
	if in[0].Name != "b" {
		t.Error("Coalesce modified its input")
	}
	if Total(want) != 37 {
		t.Errorf("Total = %d", Total(want))
	}
}

func TestSplitBlocks(t *testing.T) {
	got := SplitBlocks([]Range{{Name: "f", Off: 5, Len: 20, Priority: PriorityOptimizer}, {Name: "g", Off: 16, Len: 8}}, 8)
	want := []Range{
		{Name: "f", Off: 5, Len: 3, Priority: PriorityOptimizer},
		{Name: "f", Off: 8, Len: 8, Priority: PriorityOptimizer},
		{Name: "f", Off: 16, Len: 8, Priority: PriorityOptimizer},
		{Name: "f", Off: 24, Len: 1, Priority: PriorityOptimizer},
		{Name: "g", Off: 16, Len: 8},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", fmtRanges(got), fmtRanges(want))
	}
}

// TestShareProperties: for random unit sets, parts are disjoint, cover
// every unit, and every part of a priority is within one unit of an even
// share.
func TestShareProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		var units []Range
		var maxUnit int64
		for i := rng.IntN(40); i >= 0; i-- {
			u := Range{Name: string(rune('a' + rng.IntN(5))), Off: int64(i) * 1000, Len: 1 + rng.Int64N(900), Priority: Priority(rng.IntN(3))}
			maxUnit = max(maxUnit, u.Len)
			units = append(units, u)
		}
		parts := 1 + rng.IntN(7)
		seen := map[Range]int{}
		for p := 0; p < parts; p++ {
			got := share(units, p, parts)
			byPrio := map[Priority]int64{}
			for _, u := range got {
				seen[u]++
				byPrio[u.Priority] += u.Len
			}
			for prio, n := range byPrio {
				var total int64
				for _, u := range units {
					if u.Priority == prio {
						total += u.Len
					}
				}
				if even := total / int64(parts); n > even+maxUnit+1 {
					t.Fatalf("part %d/%d has %d bytes of priority %s, even share %d", p, parts, n, prio, even)
				}
			}
		}
		for _, u := range units {
			if seen[u] != 1 {
				t.Fatalf("unit %+v assigned %d times", u, seen[u])
			}
		}
	}
}

func TestScaleDownNoOverflow(t *testing.T) {
	if got := scaleDown(math.MaxInt64-1, 1000, math.MaxInt64); got != 999 {
		t.Errorf("got %d", got)
	}
	if got := scaleDown(5, 3, 5); got != 2 {
		t.Errorf("clamp: got %d", got)
	}
}

func TestPlanOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		o  PlanOptions
		ok bool
	}{
		{PlanOptions{}, true},
		{PlanOptions{Rank: 3, WorldSize: 4, Part: 1, Parts: 2, BlockSize: 4 << 20}, true},
		{PlanOptions{WorldSize: 1}, true},
		{PlanOptions{Rank: 1}, false},
		{PlanOptions{Rank: 4, WorldSize: 4}, false},
		{PlanOptions{Rank: -1, WorldSize: 4}, false},
		{PlanOptions{WorldSize: -2}, false},
		{PlanOptions{Part: 2, Parts: 2}, false},
		{PlanOptions{Part: 1}, false},
		{PlanOptions{Parts: -1}, false},
		{PlanOptions{BlockSize: -1}, false},
	} {
		err := c.o.Validate()
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrBadOptions)) {
			t.Errorf("%+v: %v", c.o, err)
		}
	}
}

func TestPriorityString(t *testing.T) {
	for p, want := range map[Priority]string{PriorityMetadata: "metadata", PriorityModel: "model", PriorityOptimizer: "optimizer", PriorityOther: "other", 9: "priority(9)"} {
		if p.String() != want {
			t.Errorf("%d: %s", int(p), p)
		}
	}
}
