package cache

import "testing"

func TestPolicy(t *testing.T) {
	k := func(i int64) blockKey { return blockKey{idx: i} }
	type step struct {
		op         string // insert, access, park, unpark, remove
		blk        int64
		start, end int64
	}
	cases := []struct {
		name    string
		steps   []step
		victims []int64 // in order, until the policy is empty
		segs    map[int64]segment
	}{
		{
			name:    "victims oldest first",
			steps:   []step{{op: "insert", blk: 1}, {op: "insert", blk: 2}, {op: "insert", blk: 3}},
			victims: []int64{1, 2, 3},
		},
		{
			name: "sequential reads within a block are one reference",
			steps: []step{
				{op: "insert", blk: 1},
				{op: "access", blk: 1, start: 0, end: 10}, {op: "access", blk: 1, start: 10, end: 20},
				{op: "access", blk: 1, start: 20, end: 100},
			},
			segs: map[int64]segment{1: segProbation},
		},
		{
			// The kernel's concurrent readahead READs arrive in any order.
			name: "out-of-order reads of a block are one reference",
			steps: []step{
				{op: "insert", blk: 1},
				{op: "access", blk: 1, start: 40, end: 80}, {op: "access", blk: 1, start: 0, end: 40},
				{op: "access", blk: 1, start: 80, end: 100},
			},
			segs: map[int64]segment{1: segProbation},
		},
		{
			name: "re-reading part of a block promotes it",
			steps: []step{
				{op: "insert", blk: 1},
				{op: "access", blk: 1, start: 40, end: 80}, {op: "access", blk: 1, start: 50, end: 60},
			},
			segs: map[int64]segment{1: segProtected},
		},
		{
			name: "reading a block again promotes it",
			steps: []step{
				{op: "insert", blk: 1}, {op: "insert", blk: 2},
				{op: "access", blk: 1, start: 0, end: 100}, {op: "access", blk: 1, start: 0, end: 100},
				{op: "insert", blk: 3},
			},
			victims: []int64{2, 3, 1}, // probation before protected
			segs:    map[int64]segment{1: segProtected, 2: segProbation},
		},
		{
			name: "a miss's reader access then the admission is one reference",
			steps: []step{
				{op: "access", blk: 1, start: 0, end: 100}, // reader copied from the flight
				{op: "insert", blk: 1},                     // then the block was stored
			},
			segs: map[int64]segment{1: segProbation},
		},
		{
			name: "protected overflow is demoted to probation",
			steps: []step{ // cap is 0.8 * 400 = 320 bytes: three 100-byte blocks fit
				{op: "insert", blk: 1}, {op: "insert", blk: 2}, {op: "insert", blk: 3}, {op: "insert", blk: 4},
				{op: "access", blk: 1, start: 0, end: 100}, {op: "access", blk: 1, start: 0, end: 100},
				{op: "access", blk: 2, start: 0, end: 100}, {op: "access", blk: 2, start: 0, end: 100},
				{op: "access", blk: 3, start: 0, end: 100}, {op: "access", blk: 3, start: 0, end: 100},
				{op: "access", blk: 4, start: 0, end: 100}, {op: "access", blk: 4, start: 0, end: 100},
			},
			segs: map[int64]segment{1: segProbation, 2: segProtected, 3: segProtected, 4: segProtected},
		},
		{
			name:    "parked blocks are never victims",
			steps:   []step{{op: "insert", blk: 1}, {op: "insert", blk: 2}, {op: "park", blk: 1}},
			victims: []int64{2},
			segs:    map[int64]segment{1: segParked},
		},
		{
			name:    "unparked blocks are victims again",
			steps:   []step{{op: "insert", blk: 1}, {op: "park", blk: 1}, {op: "insert", blk: 2}, {op: "unpark", blk: 1}},
			victims: []int64{2, 1},
		},
		{
			name: "pending blocks are never victims",
			steps: []step{
				{op: "access", blk: 1, start: 0, end: 100}, // read from a flight, not stored yet
				{op: "insert", blk: 2},
			},
			victims: []int64{2},
			segs:    map[int64]segment{1: segPending},
		},
		{
			name: "a block re-read before it is stored is protected when stored",
			steps: []step{
				{op: "access", blk: 1, start: 0, end: 100}, {op: "access", blk: 1, start: 0, end: 100},
				{op: "insert", blk: 1},
			},
			segs: map[int64]segment{1: segProtected},
		},
		{
			name:    "removed blocks are gone",
			steps:   []step{{op: "insert", blk: 1}, {op: "insert", blk: 2}, {op: "remove", blk: 1}},
			victims: []int64{2},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPolicy(400)
			for _, s := range tc.steps {
				switch s.op {
				case "insert":
					p.insert(k(s.blk), 100)
				case "access":
					p.access(k(s.blk), 100, s.start, s.end)
				case "park":
					p.park(k(s.blk), 100)
				case "unpark":
					p.unpark(k(s.blk), 100)
				case "remove":
					p.remove(k(s.blk))
				}
			}
			for blk, want := range tc.segs {
				if got, ok := p.segmentOf(k(blk)); !ok || got != want {
					t.Errorf("block %d in segment %v (tracked %v), want %v", blk, got, ok, want)
				}
			}
			if tc.victims == nil {
				return
			}
			var got []int64
			for {
				v, _, ok := p.victim()
				if !ok {
					break
				}
				got = append(got, v.idx)
			}
			if len(got) != len(tc.victims) {
				t.Fatalf("victims %v, want %v", got, tc.victims)
			}
			for i := range got {
				if got[i] != tc.victims[i] {
					t.Fatalf("victims %v, want %v", got, tc.victims)
				}
			}
		})
	}
}

func TestPolicyInsertColdGoesFirst(t *testing.T) {
	p := newPolicy(1 << 20)
	p.insert(blockKey{idx: 1}, 10)
	p.insertCold(blockKey{idx: 2}, 10, false) // found on disk at startup
	p.insertCold(blockKey{idx: 3}, 10, true)  // found pinned
	if v, _, _ := p.victim(); v.idx != 2 {
		t.Errorf("first victim %d, want the cold block 2", v.idx)
	}
	if v, _, _ := p.victim(); v.idx != 1 {
		t.Errorf("second victim %d, want 1", v.idx)
	}
	if _, _, ok := p.victim(); ok {
		t.Error("the pinned block became a victim")
	}
}

func TestPolicyTrimsUnstoredBlocks(t *testing.T) {
	p := newPolicy(100) // tracks at most 2x the budget
	for i := range int64(50) {
		p.access(blockKey{idx: i}, 10, 0, 10)
	}
	if got := p.probation.bytes + p.protected.bytes + p.pending.bytes; got > 200 {
		t.Errorf("policy tracks %d bytes for a budget of 100", got)
	}
}

// A reader that runs ahead of slow disk writes leaves many blocks read but
// not stored; bounding the policy must forget those, not the stored blocks
// eviction needs to see (a forgotten stored block is never evicted until a
// rescan: it outlived a scan of three times the budget).
func TestPolicyTrimForgetsPendingBeforeStored(t *testing.T) {
	p := newPolicy(100) // tracks at most 2x the budget
	for i := range int64(10) {
		p.insert(blockKey{idx: i}, 10) // the budget, stored
	}
	for i := int64(100); i < 150; i++ {
		p.access(blockKey{idx: i}, 10, 0, 10) // read, not yet stored
	}
	for i := range int64(10) {
		if _, ok := p.segmentOf(blockKey{idx: i}); !ok {
			t.Fatalf("stored block %d was forgotten while unstored ones were tracked", i)
		}
	}
	if got := p.probation.bytes + p.protected.bytes + p.pending.bytes; got > 200 {
		t.Errorf("policy tracks %d bytes for a budget of 100", got)
	}
}
