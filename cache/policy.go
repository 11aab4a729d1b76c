package cache

import "sync"

// policy orders the disk blocks this process knows about for eviction. It
// is a segmented LRU:
//
//   - probation: blocks seen once. New blocks (misses, prefetch) enter at the
//     MRU end; victims are taken from its LRU end first.
//   - protected: blocks re-referenced while in probation. Capped at
//     protectedShare of the budget; overflow is demoted to probation's MRU end.
//   - parked: blocks found pinned on disk; never victims until unpinned.
//   - pending: blocks read but not (yet) stored — a miss's reader copies
//     from the flight before the block is written, a RAM-tier hit may be of
//     a block the disk no longer has. Never victims (there is nothing to
//     evict); insert moves them to probation, or to protected if they were
//     re-referenced meanwhile, keeping what was read.
//
// A "re-reference" is an access to bytes of the block that an earlier access
// already read (tracked per 1/256th of the block, see node.seen). A
// sequential reader walking through a block in 128 KiB requests — also when
// the kernel's concurrent readahead READs arrive out of order, which a
// "starts before the previous end" rule mistook for re-reads, promoting a
// whole scan — or reading a block right after readahead filled it, never
// re-references it; reading it again later (the next epoch, another worker,
// random access) does. So a sequential scan larger than the cache only
// churns probation and the protected hot set survives.
//
// The policy is advisory: the sidecar records on disk are the truth, and
// another process may evict or pin a block behind its back. Evicting re-reads
// the record under the directory lock.
type policy struct {
	mu sync.Mutex
	// GUARDED_BY(mu)
	nodes     map[blockKey]*node
	probation list
	protected list
	parked    list
	pending   list
	// protectedCap and maxTracked are in bytes. INVARIANT: protected.bytes <=
	// protectedCap after every public method returns.
	protectedCap int64
	maxTracked   int64
}

// protectedShare is the share of the budget the protected segment may hold.
const protectedShare = 0.8

type segment uint8

const (
	segProbation segment = iota
	segProtected
	segParked
	segPending
)

// granules is how finely node.seen tracks what was read of a block: with
// 1 MiB blocks a granule is a 4 KiB page, the kernel's unit, so reads that
// do not overlap never look like re-reads.
const granules = 256

// node is one tracked block.
type node struct {
	key  blockKey
	cost int64
	seg  segment
	// seen marks the granules (1/granules of the block each) that
	// accesses have read. GUARDED_BY(policy.mu)
	seen [granules / 64]uint64
	// hot: re-referenced while pending; protected once stored.
	hot        bool
	prev, next *node
}

// list is an intrusive doubly-linked list with a sentinel; front is MRU.
type list struct {
	root  node
	bytes int64
	n     int
}

func (l *list) lazyInit() {
	if l.root.next == nil {
		l.root.next, l.root.prev = &l.root, &l.root
	}
}

func (l *list) pushFront(n *node) {
	l.lazyInit()
	n.prev, n.next = &l.root, l.root.next
	l.root.next.prev = n
	l.root.next = n
	l.bytes += n.cost
	l.n++
}

func (l *list) pushBack(n *node) {
	l.lazyInit()
	n.next, n.prev = &l.root, l.root.prev
	l.root.prev.next = n
	l.root.prev = n
	l.bytes += n.cost
	l.n++
}

func (l *list) remove(n *node) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
	l.bytes -= n.cost
	l.n--
}

func (l *list) back() *node {
	if l.n == 0 {
		return nil
	}
	return l.root.prev
}

func newPolicy(budget int64) *policy {
	return &policy{
		nodes:        map[blockKey]*node{},
		protectedCap: int64(float64(budget) * protectedShare),
		maxTracked:   2 * budget,
	}
}

func (p *policy) segList(s segment) *list {
	switch s {
	case segProtected:
		return &p.protected
	case segParked:
		return &p.parked
	case segPending:
		return &p.pending
	}
	return &p.probation
}

// insert tracks a newly stored block at probation's MRU end; a known block
// is left where it is.
func (p *policy) insert(k blockKey, cost int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n, ok := p.nodes[k]; ok {
		if n.seg == segPending {
			p.pending.remove(n)
			if n.hot {
				p.protectLocked(n)
			} else {
				n.seg = segProbation
				p.probation.pushFront(n)
			}
		}
		return
	}
	n := &node{key: k, cost: cost, seg: segProbation}
	p.nodes[k] = n
	p.probation.pushFront(n)
	p.trimLocked()
}

// insertCold tracks a block discovered on disk (written by an earlier or
// another process) at probation's LRU end: evicted before anything this
// process used.
func (p *policy) insertCold(k blockKey, cost int64, pinned bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.nodes[k]
	if ok && n.seg != segPending {
		return
	}
	if ok {
		p.pending.remove(n)
		n.seg = segProbation
	} else {
		n = &node{key: k, cost: cost, seg: segProbation}
	}
	if pinned {
		n.seg = segParked
		p.parked.pushBack(n)
	} else {
		p.probation.pushBack(n)
	}
	p.nodes[k] = n
}

// access records a read of [start, end) within block k (offsets within the
// block). An unknown block is tracked as if inserted. It reports whether
// the block was promoted to protected.
func (p *policy) access(k blockKey, cost, start, end int64) (promoted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.nodes[k]
	if !ok {
		n = &node{key: k, cost: cost, seg: segPending}
		n.read(cost, start, end)
		p.nodes[k] = n
		p.pending.pushFront(n)
		p.trimLocked()
		return false
	}
	reref := n.read(cost, start, end)
	switch {
	case n.seg == segPending:
		n.hot = n.hot || reref
		p.pending.remove(n)
		p.pending.pushFront(n)
	case n.seg == segParked:
		p.parked.remove(n)
		p.parked.pushFront(n)
	case n.seg == segProtected:
		p.protected.remove(n)
		p.protected.pushFront(n)
	case reref:
		p.probation.remove(n)
		p.protectLocked(n)
		return true
	default:
		p.probation.remove(n)
		p.probation.pushFront(n)
	}
	return false
}

// read marks [start, end) (offsets within a block of the given cost) as
// read and reports whether it re-reads bytes read before: a granule it
// covers whole was read already, or, for an access inside one granule,
// that granule was. Reads that do not overlap never re-read, whatever
// their order and alignment (a granule only partly read before is not
// counted against a later access covering it whole unless they overlap).
func (n *node) read(cost, start, end int64) (reref bool) {
	g := max((cost+granules-1)/granules, 1)
	if end <= start {
		return false
	}
	first, last := start/g, min((end-1)/g, granules-1)
	marked := func(i int64) bool { return n.seen[i/64]&(1<<(i%64)) != 0 }
	if lo, hi := (start+g-1)/g, min(end/g, granules); lo < hi {
		for i := lo; i < hi && !reref; i++ {
			reref = marked(i)
		}
	} else {
		reref = true
		for i := first; i <= last; i++ {
			reref = reref && marked(i)
		}
	}
	for i := first; i <= last; i++ {
		n.seen[i/64] |= 1 << (i % 64)
	}
	return reref
}

// promote marks k hot (another process re-referenced it): protected MRU.
func (p *policy) promote(k blockKey, cost int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.nodes[k]
	switch {
	case !ok:
		n = &node{key: k, cost: cost}
		p.nodes[k] = n
	case n.seg == segParked:
		return
	default:
		p.segList(n.seg).remove(n)
	}
	p.protectLocked(n)
}

// protectLocked puts an unlisted node at protected's MRU end and demotes
// the overflow.
func (p *policy) protectLocked(n *node) {
	n.seg = segProtected
	p.protected.pushFront(n)
	for p.protected.bytes > p.protectedCap {
		d := p.protected.back()
		p.protected.remove(d)
		d.seg = segProbation
		p.probation.pushFront(d)
	}
}

// trimLocked bounds the policy's memory when it tracks far more than the
// budget: it forgets pending blocks first (read, never stored: the disk was
// full, or the RAM tier still has what the disk evicted), oldest first, and
// only then the coldest probation blocks. A forgotten stored block stays on
// disk but cannot be chosen for eviction until a reconcile rediscovers it,
// so stored blocks go last: when a fast reader ran ahead of slow disk
// writes, forgetting stored blocks instead kept an unpinned checkpoint on
// disk through a scan three times the budget.
func (p *policy) trimLocked() {
	for p.probation.bytes+p.protected.bytes+p.pending.bytes > p.maxTracked {
		l := &p.pending
		if l.n == 0 {
			l = &p.probation
		}
		n := l.back()
		if n == nil {
			return
		}
		l.remove(n)
		delete(p.nodes, n.key)
	}
}

// victim removes and returns the coldest unparked block.
func (p *policy) victim() (blockKey, int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.probation.back()
	if n == nil {
		n = p.protected.back()
	}
	if n == nil {
		return blockKey{}, 0, false
	}
	p.segList(n.seg).remove(n)
	delete(p.nodes, n.key)
	return n.key, n.cost, true
}

// probationEmpty reports whether the probation segment holds no block.
func (p *policy) probationEmpty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.probation.n == 0
}

// park moves k to the parked segment (it is pinned on disk).
func (p *policy) park(k blockKey, cost int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.nodes[k]
	if ok {
		p.segList(n.seg).remove(n)
	} else {
		n = &node{key: k, cost: cost}
		p.nodes[k] = n
	}
	n.seg = segParked
	p.parked.pushFront(n)
}

// unpark moves k from parked to probation's MRU end.
func (p *policy) unpark(k blockKey, cost int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.nodes[k]
	if ok {
		p.segList(n.seg).remove(n)
	} else {
		n = &node{key: k, cost: cost}
		p.nodes[k] = n
	}
	n.seg = segProbation
	p.probation.pushFront(n)
}

// remove stops tracking k.
func (p *policy) remove(k blockKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n, ok := p.nodes[k]; ok {
		p.segList(n.seg).remove(n)
		delete(p.nodes, k)
	}
}

// segmentOf reports where k is tracked (for tests).
func (p *policy) segmentOf(k blockKey) (segment, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.nodes[k]
	if !ok {
		return 0, false
	}
	return n.seg, true
}
