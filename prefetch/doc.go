// Package prefetch finds the newest complete training checkpoint under a
// directory and plans the byte ranges a restoring job will read, so that a
// node cache can be filled with full parallelism before the GPUs ask
// (issue #8).
//
// Three steps, each usable on its own:
//
//   - A Tree is the read-only view the planner needs (ReadDir, ReadAt,
//     Stat). DirTree adapts a local directory (a blobfs mount), StoreTree a
//     blob.Store prefix. Nothing here touches the OS or the SDK directly.
//   - FindLatest (and Candidates, which also says why newer checkpoints were
//     skipped) recognises the layouts of DeepSpeed, Hugging Face Trainer,
//     PyTorch DCP, Ray Train (v1 and v2) and Lightning from the frameworks'
//     own markers and returns the newest checkpoint that is complete, i.e.
//     one its framework would load. Each layout's file documents exactly
//     what "complete" means for it.
//   - Plan turns a Checkpoint into []Range (file, offset, length, priority):
//     whole files by default, narrowed to what one rank reads where the
//     layout says (DeepSpeed ZeRO shards, DCP per-rank files, per-rank RNG
//     files), and optionally split between cooperating fetchers.
//
// Prefetch is a hint: a wrong guess costs bandwidth and cache space, never
// correctness, because the application still reads through the normal path.
// That is why the rules below prefer simple, documented heuristics over
// re-implementing each framework's loader.
//
// Filling the cache from []Range (bounded parallelism, bandwidth limit,
// progress) is the caller's job: ranges are sorted by Priority, coalesced,
// and SplitBlocks cuts them at cache-block boundaries.
package prefetch
