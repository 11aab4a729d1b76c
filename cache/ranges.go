package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
)

// Random reads fetch small ranges.
//
// A block is the unit of the disk tier (presence, checksum, eviction), so a
// cold read through ReadAt fetches whole blocks: right for a scan, wasteful
// for a random 4 KiB read (BlobFuse2's 16 MiB blocks cap cold 4K reads near
// 87 IOPS). ReadRandomAt serves a random reader instead:
//
//   - a block that a tier already holds, or that a fetch is bringing in,
//     serves its part of the read as usual (disk bytes verified);
//   - for a block that is not cached, only the RangeUnit-aligned units the
//     read touches are fetched, one backend request per run of
//     consecutive missing units, shared by concurrent readers (flights,
//     like blocks), and kept in the RAM tier keyed by (blob, ETag, unit).
//
// Units live only in RAM and never reach the disk tier, whose records and
// checksums stay whole blocks. They are immutable for the same reason
// blocks are: the ETag is in the key and every fetch is pinned to it (the
// store fails with blob.ErrStale rather than return another version's
// bytes), so a unit can never mix versions; and they are exactly what the
// store returned, with its transfer checksum verified when --verify-reads
// is on, like every fetch.

// DefaultRangeUnit is the unit of random-read fetches: a 4 KiB random read
// costs one 4 KiB GET, i.e. no amplification beyond the page the kernel
// asked for (BlobFuse2 fetches a 16 MiB block; the request latency, not
// the bytes, dominates such a GET).
const DefaultRangeUnit = 4 << 10

// unitKey is the RAM tier's key of a range unit: like blockKey.ramKey, with
// a trailing tag so units and blocks never collide.
func unitKey(fk fileKey, idx int64) string {
	var buf [33]byte
	copy(buf[:16], fk.name[:])
	copy(buf[16:24], fk.etag[:])
	binary.LittleEndian.PutUint64(buf[24:32], uint64(idx))
	buf[32] = 'u'
	return string(buf[:])
}

// ReadRandomAt reads like ReadAt, for a random reader: cached blocks serve
// what they hold, and what is not cached is fetched in RangeUnit-aligned
// ranges kept in RAM, not as whole blocks. The caller (Reader) decides
// which reads are random; a sequential reader should use ReadAt, whose
// blocks reach the disk tier and feed readahead.
func (c *Cache) ReadRandomAt(ctx context.Context, obj Object, fetch FetchFunc, p []byte, off int64) (int, error) {
	want, eof, err := c.readArgs(obj, fetch, len(p), off)
	if err != nil || want == 0 {
		return 0, err
	}
	fk := keyOf(obj)
	validated := c.ids.has(fk, obj.Credential)
	end := off + want
	var n int64
	for b := off / c.bs; b <= (end-1)/c.bs; b++ {
		s, e := max(off, b*c.bs), min(end, (b+1)*c.bs)
		dst := p[s-off : e-off]
		served, err := c.readCachedBlock(ctx, obj, fk, fetch, b, dst, s, &validated)
		if err == nil && !served {
			err = c.readUnits(ctx, obj, fk, fetch, dst, s, &validated)
		}
		if err != nil {
			return int(n), err
		}
		n += e - s
	}
	return int(n), eof
}

// readCachedBlock copies dst (at off, inside block b) from block b if a tier
// holds it or a fetch of it is running; served is false otherwise.
func (c *Cache) readCachedBlock(ctx context.Context, obj Object, fk fileKey, fetch FetchFunc, b int64, dst []byte, off int64, validated *bool) (served bool, err error) {
	var pt part
	c.lookup(obj, fk, b, false, &pt)
	if pt.pooled {
		defer c.disk.putBuf(pt.data)
	}
	if pt.data == nil {
		c.fmu.Lock()
		fl := c.flights[blockKey{fk, b}]
		c.fmu.Unlock()
		if fl == nil {
			return false, nil
		}
		if pt.data, err = c.wait(ctx, obj, fl); err != nil {
			return false, err
		}
		c.st.ramHits.Add(1)
		c.met.hit(tierRAM)
	}
	if !*validated {
		if err := c.validate(ctx, obj, fk, fetch); err != nil {
			return false, err
		}
		*validated = true
	}
	s := off - b*c.bs
	copy(dst, pt.data[s:s+int64(len(dst))])
	if c.disk != nil {
		k := blockKey{fk, b}
		if c.disk.pol.access(k, blockCost(int64(len(pt.data))), s, s+int64(len(dst))) {
			c.disk.notePromoted(k)
			c.disk.flushPromotions()
		}
	}
	return true, nil
}

// readUnits serves dst (at off) from range units: RAM hits, running unit
// fetches, or new fetches of the missing runs.
func (c *Cache) readUnits(ctx context.Context, obj Object, fk fileKey, fetch FetchFunc, dst []byte, off int64, validated *bool) error {
	u := c.unit
	first, last := off/u, (off+int64(len(dst))-1)/u
	parts := make([]part, last-first+1)
	for attempt := 0; ; attempt++ {
		gen := c.flightGen.Load()
		if c.ram != nil {
			for i := range parts {
				if parts[i].data == nil {
					if data, ok := c.ram.Get(unitKey(fk, first+int64(i))); ok {
						parts[i].data = data
						c.st.rangeHits.Add(1)
						c.met.hit(tierRAMRange)
					}
				}
			}
		}
		c.fmu.Lock()
		if c.flightGen.Load() != gen && attempt < 2 {
			c.fmu.Unlock()
			continue // a fetch finished while we looked: look again
		}
		var run []int
		flush := func() {
			if len(run) > 0 {
				c.startUnitsLocked(ctx, obj, fk, fetch, first+int64(run[0]), parts, run)
				run = nil
			}
		}
		maxRun := int(c.maxRun * c.bs / u)
		for i := range parts {
			if parts[i].data != nil {
				flush()
				continue
			}
			if fl := c.unitFlights[blockKey{fk, first + int64(i)}]; fl != nil {
				flush()
				parts[i].fl = fl
				continue
			}
			if run = append(run, i); len(run) == maxRun {
				flush()
			}
		}
		flush()
		c.fmu.Unlock()
		break
	}
	if !*validated {
		// A successful fetch of our own proves access (see readWindow).
		for _, pt := range parts {
			if pt.own {
				if _, err := c.wait(ctx, obj, pt.fl); err == nil {
					c.ids.add(fk, obj.Credential)
					*validated = true
					break
				}
			}
		}
	}
	var n int
	for i, pt := range parts {
		data := pt.data
		if pt.fl != nil {
			var err error
			if data, err = c.wait(ctx, obj, pt.fl); err != nil {
				return err
			}
		}
		if !pt.own && !*validated {
			if err := c.validate(ctx, obj, fk, fetch); err != nil {
				return err
			}
			*validated = true
		}
		s := off + int64(n) - (first+int64(i))*u
		n += copy(dst[n:], data[s:])
	}
	return nil
}

// startUnitsLocked starts one fetch for the units in run (consecutive units
// from unit first). Must hold fmu.
func (c *Cache) startUnitsLocked(ctx context.Context, obj Object, fk fileKey, fetch FetchFunc, first int64, parts []part, run []int) {
	fls := make([]*flight, len(run))
	keys := runKeys(fk, first, len(run))
	for j, i := range run {
		fl := newFlight()
		fls[j] = fl
		c.unitFlights[keys[j]] = fl
		parts[i].fl, parts[i].own = fl, true
		c.st.rangeMisses.Add(1)
	}
	if c.closed.Load() {
		abortLocked(c.unitFlights, keys, fls)
		return
	}
	c.wg.Add(1)
	go c.runUnitFetch(ctx, obj, fk, fetch, first, fls)
}

// runUnitFetch fetches one run of units, hands each unit to its waiters and
// then to the RAM tier; like runFetch it survives every reader's
// cancellation and ends early only at Close.
func (c *Cache) runUnitFetch(rctx context.Context, obj Object, fk fileKey, fetch FetchFunc, first int64, fls []*flight) {
	defer c.wg.Done()
	ctx, done := c.detached(rctx)
	defer done()
	u := c.unit
	start := first * u
	end := min(start+int64(len(fls))*u, obj.Size)
	buf, err := c.fetchRange(ctx, obj, fetch, start, end, nil)
	if err != nil {
		c.retireUnits(fk, first, fls)
		err = fmt.Errorf("cache: fetch %s [%d, %d): %w", obj.Name, start, end, err)
		for _, fl := range fls {
			fl.fail(err)
		}
		return
	}
	for i, fl := range fls {
		s := int64(i) * u
		e := min(s+u, int64(len(buf)))
		data := buf[s:e:e]
		if len(fls) > 1 && c.ram != nil {
			data = bytes.Clone(data) // own memory per unit, for the RAM tier's accounting
		}
		fl.data = data
		close(fl.done)
	}
	if c.ram != nil {
		for i, fl := range fls {
			c.ram.Set(unitKey(fk, first+int64(i)), fl.data, int64(len(fl.data)))
		}
		// Until ristretto applies the Sets, the units stay findable
		// through their flights.
		c.ram.Wait()
	}
	for _, fl := range fls {
		close(fl.stored)
	}
	c.retireUnits(fk, first, fls)
}

// retireUnits removes a run's unit flights from the map.
func (c *Cache) retireUnits(fk fileKey, first int64, fls []*flight) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	for i, fl := range fls {
		k := blockKey{fk, first + int64(i)}
		if c.unitFlights[k] == fl {
			delete(c.unitFlights, k)
		}
	}
	c.flightGen.Add(1)
}
