package prefetch_test

import (
	"context"
	"fmt"

	"github.com/blobfs/blobfs/prefetch"
)

// A restarting rank finds the checkpoint its framework will load and the
// byte ranges it will read; a filler then fetches them in priority order,
// one cache block per piece.
func Example() {
	ctx := context.Background()
	tree, err := prefetch.OpenDir("testdata/checkpoints") // a blobfs mount in production
	if err != nil {
		panic(err)
	}
	defer tree.Close()

	ck, err := prefetch.FindLatest(ctx, tree, "deepspeed")
	if err != nil {
		panic(err)
	}
	fmt.Println(ck.Layout, ck.Path, ck.Step)

	ranges, err := prefetch.Plan(ctx, tree, ck, prefetch.PlanOptions{Rank: 1, WorldSize: 2})
	if err != nil {
		panic(err)
	}
	for _, r := range ranges {
		fmt.Printf("%-9s %s from %d\n", r.Priority, r.Name, r.Off)
	}
	fmt.Println("rank 1 reads less than the whole checkpoint:", prefetch.Total(ranges) < ck.Size())
	for _, piece := range prefetch.SplitBlocks(ranges, 4<<20) {
		_ = piece // hand to the cache as one block fetch, bounded parallelism
	}
	// Output:
	// deepspeed deepspeed/global_step200 200
	// metadata  deepspeed/latest from 0
	// model     deepspeed/global_step200/mp_rank_00_model_states.pt from 0
	// optimizer deepspeed/global_step200/zero_pp_rank_1_mp_rank_00_optim_states.pt from 0
	// rank 1 reads less than the whole checkpoint: true
}
