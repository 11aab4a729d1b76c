package cache

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"testing"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
)

// Scan resistance through the Reader (readahead fills included): a hot
// file read a few times survives a sequential scan of 3x the disk budget.
func TestReaderScanKeepsHotFile(t *testing.T) {
	const budget = 32 << 20
	mem := memblob.New()
	put := func(name string, size int) blob.Attrs {
		data := make([]byte, size)
		rand.Read(data)
		a, err := mem.Put(context.Background(), name, data, blob.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	hot := put("hot", 4<<20)
	var scan []blob.Attrs
	for i := range 3 * budget / (8 << 20) {
		scan = append(scan, put(fmt.Sprint("scan", i), 8<<20))
	}
	cs := &countingStore{Store: mem}
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: budget, BlockSize: 1 << 20, MemBudgetBytes: 1 << 20})
	r := NewReader(c, cs, ReaderOptions{Account: "acct", Container: "c", Identity: "test", ReadaheadBytes: 64 << 20, Logger: quietLogger()})
	t.Cleanup(r.Close)
	readAllOf := func(a blob.Attrs) {
		p := make([]byte, 1<<20)
		for off := int64(0); off < a.Size; off += int64(len(p)) {
			if _, err := r.ReadAtSized(context.Background(), a.Name, a.ETag, a.Size, p, off); err != nil && err != io.EOF {
				t.Fatal(err)
			}
		}
		c.ramWait()
	}
	for range 3 {
		readAllOf(hot)
	}
	for _, a := range scan {
		readAllOf(a)
	}
	obj := r.object(hot.Name, hot.ETag, hot.Size)
	st, err := c.Status(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Complete() {
		var segs []string
		for b := range st.Blocks {
			s, ok := c.disk.pol.segmentOf(blockKey{keyOf(obj), b})
			segs = append(segs, fmt.Sprint(s, ok))
		}
		t.Fatalf("hot file after a scan of 3x the budget: %d of %d blocks on disk (policy %v)", st.CachedBlocks, st.Blocks, segs)
	}
}
