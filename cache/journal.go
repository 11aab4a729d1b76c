package cache

import (
	"fmt"
)

// initJournalLocked (re)creates an empty journal sized for this process's
// budget. Must hold L_dir.
func (d *disk) initJournalLocked() error {
	d.seq, d.ring = 0, ringFor(d.budget, d.bs)
	if err := d.ledgerF.Truncate(ledgerFileSize(d.ring)); err != nil {
		return fmt.Errorf("cache: size ledger: %w", err)
	}
	d.dirty = true
	return nil
}

// appendJournalLocked journals ents. It first applies what others
// journaled, so that this process can skip its own entries. Must hold L_dir.
func (d *disk) appendJournalLocked(ents []jent) {
	if d.ring == 0 {
		return
	}
	synced := true
	if err := d.syncJournalLocked(); err != nil {
		d.log.Warn("cache: read journal", "err", err)
		synced = false
	}
	buf := make([]byte, jentSize)
	for _, e := range ents {
		e.encode(buf)
		if _, err := d.ledgerF.WriteAt(buf, pageSize+int64(d.seq%uint64(d.ring))*jentSize); err != nil {
			d.log.Warn("cache: write journal", "err", err)
			break
		}
		d.seq++
	}
	d.dirty = true
	if synced {
		d.cursor = d.seq
	}
}

// syncJournalLocked applies the journal entries this process has not seen
// to its policy: other processes' blocks enter at the recency of their
// admission, and blocks any process found hot become protected. A process
// that fell more than a ring behind rescans instead. Must hold L_dir.
func (d *disk) syncJournalLocked() error {
	if d.seq == d.cursor {
		return nil
	}
	if d.seq < d.cursor || d.seq-d.cursor > uint64(d.ring) {
		return d.reconcileLocked()
	}
	n := d.seq - d.cursor
	buf := make([]byte, n*jentSize)
	start := d.cursor % uint64(d.ring)
	first := min(n, uint64(d.ring)-start) // entries before the ring wraps
	if _, err := d.ledgerF.ReadAt(buf[:first*jentSize], pageSize+int64(start)*jentSize); err != nil {
		return fmt.Errorf("cache: read journal: %w", err)
	}
	if first < n {
		if _, err := d.ledgerF.ReadAt(buf[first*jentSize:], pageSize); err != nil {
			return fmt.Errorf("cache: read journal: %w", err)
		}
	}
	for i := range n {
		e := decodeJent(buf[i*jentSize:])
		switch e.kind {
		case jAdmit:
			d.pol.insert(e.k, d.bs)
		case jPromote:
			d.pol.promote(e.k, d.bs)
		}
	}
	d.cursor = d.seq
	return nil
}

// notePromoted queues a block this process found hot for the journal.
func (d *disk) notePromoted(k blockKey) {
	d.pendMu.Lock()
	defer d.pendMu.Unlock()
	if len(d.pending) < maxRing {
		d.pending = append(d.pending, k)
	}
}

// flushPromotions journals queued promotions now.
func (d *disk) flushPromotions() {
	d.pendMu.Lock()
	n := len(d.pending)
	d.pendMu.Unlock()
	if n == 0 {
		return
	}
	if err := d.lock(); err != nil {
		d.log.Warn("cache: journal promotions", "err", err)
		return
	}
	d.unlock()
}
