// Package prefetch will plan which byte ranges to fetch ahead of readers and
// fill the node cache with them (`blobfs prefetch`).
//
// Planned shape (issue #8): planners for dataset manifests, sequential
// readahead and checkpoint layouts (DeepSpeed, Hugging Face, PyTorch DCP,
// Ray Train, Lightning) that find the newest complete checkpoint and the
// ranges each rank reads. Prefetch puts bytes into the cache through the
// same API as a read miss: there is exactly one way to fill the cache.
package prefetch
