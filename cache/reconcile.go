package cache

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// reconcileLocked rescans the directory: it removes crash debris (temp
// files, data files without a sidecar, corrupt or truncated objects,
// RESERVED records of dead writers, bytes of absent blocks), recomputes the
// ledger exactly, and hands every present block to the policy (as cold,
// older sidecars colder). Must hold L_dir.
func (d *disk) reconcileLocked() error {
	d.lastScan = time.Now()
	var used int64
	// The ledger is charged at its full size (the journal fills it over time).
	used += dirBytes(d.dir) + max(stBytes(filepath.Join(d.dir, ledgerName)), ledgerFileSize(d.ring)) + stBytes(filepath.Join(d.dir, liveName))
	used += dirBytes(d.tmpDir) + dirBytes(d.objDir)
	// Sidecars are only created under L_dir, so anything in tmp/ is debris.
	if ents, err := os.ReadDir(d.tmpDir); err == nil {
		for _, e := range ents {
			os.Remove(filepath.Join(d.tmpDir, e.Name()))
		}
	}
	subs, err := os.ReadDir(d.objDir)
	if err != nil {
		return fmt.Errorf("cache: scan: %w", err)
	}
	type found struct {
		k      blockKey
		cost   int64
		pinned bool
		mtime  time.Time
	}
	var all []found
	for _, sub := range subs {
		subPath := filepath.Join(d.objDir, sub.Name())
		if !sub.IsDir() {
			os.Remove(subPath)
			continue
		}
		used += dirBytes(subPath)
		ents, err := os.ReadDir(subPath)
		if err != nil {
			continue
		}
		kinds := map[fileKey]int{} // bit 1: idx, bit 2: data
		for _, e := range ents {
			stem, kind := e.Name(), 0
			switch {
			case strings.HasSuffix(stem, idxSuffix):
				stem, kind = strings.TrimSuffix(stem, idxSuffix), 1
			case strings.HasSuffix(stem, dataSuffix):
				stem, kind = strings.TrimSuffix(stem, dataSuffix), 2
			}
			fk, ok := parseBase(stem)
			if kind == 0 || !ok || fk.fanout() != sub.Name() {
				os.RemoveAll(filepath.Join(subPath, e.Name()))
				continue
			}
			kinds[fk] |= kind
		}
		for fk, kind := range kinds {
			if kind != 3 {
				os.Remove(d.idxPath(fk))
				os.Remove(d.dataPath(fk))
				continue
			}
			cost, blocks, mtime, keep := d.scanObject(fk)
			if !keep {
				continue
			}
			used += cost
			for _, b := range blocks {
				all = append(all, found{k: blockKey{fk, b.idx}, cost: b.cost, pinned: b.pinned, mtime: mtime})
			}
		}
	}
	d.used = used
	d.dirty = true
	d.cursor = d.seq // the scan saw everything journaled so far
	// Newest first, each pushed to the cold end: the oldest ends coldest.
	sort.SliceStable(all, func(i, j int) bool { return all[i].mtime.After(all[j].mtime) })
	for _, f := range all {
		d.pol.insertCold(f.k, f.cost, f.pinned)
	}
	return nil
}

type scannedBlock struct {
	idx    int64
	cost   int64
	pinned bool
}

// scanObject checks one object; keep=false means it was removed. cost is
// what it charges to the ledger.
func (d *disk) scanObject(fk fileKey) (cost int64, blocks []scannedBlock, mtime time.Time, keep bool) {
	remove := func() {
		os.Remove(d.idxPath(fk))
		os.Remove(d.dataPath(fk))
		d.invalidate(fk)
	}
	of, err := d.openFile(fk)
	if err != nil {
		remove()
		return 0, nil, mtime, false
	}
	defer of.close()
	ist, err1 := of.idx.Stat()
	dst, err2 := of.data.Stat()
	if err1 != nil || err2 != nil || of.hdr.blockSize != d.bs || dst.Size() != of.hdr.size ||
		ist.Size() < of.hdr.hdrSize+of.nblocks*recSize {
		// Truncated, foreign or from another block size: debris.
		remove()
		return 0, nil, mtime, false
	}
	mtime = ist.ModTime()
	exclusive := flock(of.idx, unix.LOCK_EX|unix.LOCK_NB) == nil
	if exclusive {
		defer flock(of.idx, unix.LOCK_UN)
	}
	recs, err := of.readRecords()
	if err != nil {
		remove()
		return 0, nil, mtime, false
	}
	var live int32
	for i, r := range recs {
		switch {
		case r.present():
			live++
			c := blockCost(int64(r.length))
			cost += c
			blocks = append(blocks, scannedBlock{idx: int64(i), cost: c, pinned: r.pinned()})
		case r.reserved() && !exclusive:
			live++ // a live writer's reservation
			cost += blockCost(int64(r.length))
		case r.state != 0 && exclusive:
			// A dead writer's reservation or a torn record.
			_ = of.writeRecord(int64(i), record{})
			recs[i] = record{}
		}
	}
	if exclusive {
		if live == 0 {
			remove()
			return 0, nil, mtime, false
		}
		d.punchAbsent(of, recs)
	}
	setLive(of.idx, live)
	return cost + idxCost(of.hdr.hdrSize, of.nblocks), blocks, mtime, true
}

// punchAbsent frees bytes in the data file of blocks whose record is not
// live: left by a writer that died between writing and committing, or an
// evictor that died between unmarking and punching.
func (d *disk) punchAbsent(of *objFile, recs []record) {
	fd := int(of.data.Fd())
	var off int64
	for off < of.hdr.size {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			return // ENXIO: no data after off
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return
		}
		for b := start / d.bs; b*d.bs < end && b < int64(len(recs)); b++ {
			if !recs[b].live() {
				_ = punch(of.data, b*d.bs, blockLen(of.hdr.size, d.bs, b))
			}
		}
		off = roundUp(end, d.bs)
	}
}

// dirBytes is what a directory charges: what it occupies, at least a page
// (what createLocked charges for a new one; tmpfs reports 0).
func dirBytes(path string) int64 { return max(stBytes(path), pageSize) }

// stBytes is the space a file or directory occupies.
func stBytes(path string) int64 {
	var st unix.Stat_t
	if unix.Lstat(path, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}
