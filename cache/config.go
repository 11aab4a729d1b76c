package cache

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// DefaultBlockSize is the unit of caching: presence, checksum, eviction,
// pinning and the RAM tier all work in blocks of this size; backend
// requests are runs of up to MaxFetchBytes of consecutive missing blocks.
//
// 1 MiB, chosen by measurement on this machine (2 vCPU EPYC, ext4 on
// virtio; `go test -run '^$' -bench . ./cache/`, medians of 2-3 runs).
// Against a real blob.Store (azstore on Azurite 3.37, same 2 cores, one
// 64 MiB blob, empty cache each time):
//
//	block    cold 4 KiB read   cold sequential, 1 MiB reads   Fill (readahead)
//	256 KiB   3.3 ms           133 MB/s                       355 MB/s
//	1 MiB     6.9 ms           150 MB/s                       338 MB/s
//	4 MiB    19.7 ms           205 MB/s                       290-334 MB/s
//	16 MiB   52 ms             270 MB/s                       295-335 MB/s
//
// With a local FetchFunc (tmpfs, so the cache's own CPU cost shows, not the
// virtio disk's writeback), 1 MiB requests:
//
//	block    RAM hit    disk hit   cold sequential miss
//	256 KiB  11.4 GB/s  2.76 GB/s  1.13 GB/s
//	1 MiB    11.9 GB/s  2.63 GB/s  1.58 GB/s
//	4 MiB    12.5 GB/s  0.85 GB/s  1.69 GB/s
//	16 MiB   7-14 GB/s  0.19 GB/s  1.64 GB/s
//
// Why 1 MiB:
//   - A cold random read fetches a whole block: its latency grows with the
//     block (3.3 ms at 256 KiB, 52 ms at 16 MiB, the BlobFuse2 default that
//     caps cold 4K reads near 87 IOPS).
//   - Every disk hit reads and verifies its whole block, so 1 MiB reads of
//     4 or 16 MiB blocks cost 3-14x more; 1 MiB is as cheap as 256 KiB.
//   - Big GETs come from coalescing, not from big blocks: Fill (readahead,
//     prefetch) fetches runs of MaxFetchBytes = 8 MiB, 16 at a time, and
//     reaches the same ~340 MB/s at every block size. Only a sequential
//     reader without readahead prefers big blocks (each GET is then one
//     block); the read path must drive readahead through Fill.
//   - 256 KiB pays ~30% more per-block CPU on misses and 4x the metadata:
//     16 bytes of sidecar and ~150 bytes of RAM (policy node) per block,
//     i.e. ~150 MB of RAM for a 1 TB disk tier at 1 MiB.
//
// Datasets of small random records may prefer 256 KiB; checkpoint and shard
// streaming lose nothing with 1 MiB.
const DefaultBlockSize = 1 << 20

// Defaults for the other Config fields.
const (
	// DefaultMaxFetchBytes: one backend GET covers at most this many bytes.
	DefaultMaxFetchBytes = 8 << 20
	// DefaultMaxInflightFetches bounds concurrent backend GETs per Cache;
	// more than 8–16 parallel ranges did not help on 2 cores.
	DefaultMaxInflightFetches = 16
	// DefaultDiskBudgetPercent of the cache filesystem's size is used when
	// neither DiskBudgetBytes nor DiskBudgetPercent is set.
	DefaultDiskBudgetPercent = 80
	// DefaultMemBudgetBytes is the RAM tier's budget when MemBudgetBytes is 0.
	DefaultMemBudgetBytes = 256 << 20
	// maxBlockSize keeps a block within a u32 record length and sane RAM use.
	maxBlockSize = 64 << 20
	// maxFetchBytes caps MaxFetchBytes.
	maxFetchBytes = 256 << 20
)

// ErrConfig is wrapped by every Config.Validate error.
var ErrConfig = errors.New("cache: invalid config")

// Config configures a Cache. The zero value is valid: a RAM-only cache with
// default sizes. Fields are plain values so they can be filled from flags or
// YAML.
type Config struct {
	// Dir is the disk tier's directory (the node's NVMe), shared by every
	// process of the node that uses the same Dir. Empty disables the disk tier.
	Dir string
	// DiskBudgetBytes caps the bytes the cache may occupy in Dir (blocks,
	// sidecars and its own directories). Mutually exclusive with
	// DiskBudgetPercent.
	DiskBudgetBytes int64
	// DiskBudgetPercent caps the cache at this percentage of the size of the
	// filesystem holding Dir. Both zero means DefaultDiskBudgetPercent.
	DiskBudgetPercent float64
	// MemBudgetBytes is the RAM tier's budget: 0 means
	// DefaultMemBudgetBytes, negative disables the RAM tier.
	MemBudgetBytes int64
	// BlockSize is the unit of caching, a power of two from 4 KiB to 64 MiB;
	// 0 means DefaultBlockSize. A Dir keeps the block size it was created
	// with: a Cache opening it with another one wipes it when it is the only
	// user, else fails with ErrBlockSizeMismatch.
	BlockSize int64
	// RangeUnit is the unit of random reads' fetches and of the RAM
	// copies kept of them (ReadRandomAt): a power of two from 4 KiB to
	// BlockSize; 0 means DefaultRangeUnit.
	RangeUnit int64
	// MaxFetchBytes caps one backend request (a run of missing blocks), a
	// multiple of BlockSize; 0 means max(DefaultMaxFetchBytes, BlockSize).
	MaxFetchBytes int64
	// MaxInflightFetches bounds concurrent backend requests; 0 means
	// DefaultMaxInflightFetches.
	MaxInflightFetches int
	// Logger receives warnings (disk full, corrupt blocks); nil means
	// slog.Default().
	Logger *slog.Logger
	// Registerer receives the cache's Prometheus metrics; nil means none.
	Registerer prometheus.Registerer
}

// withDefaults returns c with zero fields replaced by defaults.
func (c Config) withDefaults() Config {
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.RangeUnit == 0 {
		c.RangeUnit = min(DefaultRangeUnit, c.BlockSize)
	}
	if c.MaxFetchBytes == 0 {
		c.MaxFetchBytes = max(DefaultMaxFetchBytes, c.BlockSize)
	}
	if c.MaxInflightFetches == 0 {
		c.MaxInflightFetches = DefaultMaxInflightFetches
	}
	if c.MemBudgetBytes == 0 {
		c.MemBudgetBytes = DefaultMemBudgetBytes
	}
	if c.Dir != "" && c.DiskBudgetBytes == 0 && c.DiskBudgetPercent == 0 {
		c.DiskBudgetPercent = DefaultDiskBudgetPercent
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first problem with c (after defaults are applied),
// wrapping ErrConfig.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.BlockSize < pageSize || c.BlockSize > maxBlockSize || c.BlockSize&(c.BlockSize-1) != 0:
		return fmt.Errorf("block size %d: want a power of two from %d to %d: %w", c.BlockSize, pageSize, maxBlockSize, ErrConfig)
	case c.RangeUnit < pageSize || c.RangeUnit > c.BlockSize || c.RangeUnit&(c.RangeUnit-1) != 0:
		return fmt.Errorf("range unit %d: want a power of two from %d to the block size %d: %w", c.RangeUnit, pageSize, c.BlockSize, ErrConfig)
	case c.MaxFetchBytes < c.BlockSize || c.MaxFetchBytes%c.BlockSize != 0 || c.MaxFetchBytes > maxFetchBytes:
		return fmt.Errorf("max fetch bytes %d: want a multiple of the block size %d, at most %d: %w", c.MaxFetchBytes, c.BlockSize, maxFetchBytes, ErrConfig)
	case c.MaxInflightFetches < 0:
		return fmt.Errorf("max inflight fetches %d is negative: %w", c.MaxInflightFetches, ErrConfig)
	case c.DiskBudgetBytes < 0:
		return fmt.Errorf("disk budget %d is negative: %w", c.DiskBudgetBytes, ErrConfig)
	case c.DiskBudgetPercent < 0 || c.DiskBudgetPercent > 100:
		return fmt.Errorf("disk budget %v%%: want 0..100: %w", c.DiskBudgetPercent, ErrConfig)
	case c.DiskBudgetBytes > 0 && c.DiskBudgetPercent > 0:
		return fmt.Errorf("set DiskBudgetBytes or DiskBudgetPercent, not both: %w", ErrConfig)
	case c.Dir == "" && (c.DiskBudgetBytes > 0 || c.DiskBudgetPercent > 0):
		return fmt.Errorf("a disk budget needs Dir: %w", ErrConfig)
	}
	return nil
}

// diskBudget resolves the byte budget of the disk tier for dir.
func (c Config) diskBudget(dir string) (int64, error) {
	if c.DiskBudgetBytes > 0 {
		return c.DiskBudgetBytes, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("cache: statfs %s: %w", dir, err)
	}
	total := float64(st.Blocks) * float64(st.Bsize)
	return int64(total * c.DiskBudgetPercent / 100), nil
}
