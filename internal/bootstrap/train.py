"""Example Ray Train job rendered by `blobfs bootstrap`.

Each GPU worker reads its shard of the files under --data (the blobfs
dataset mount, warmed into the node cache by the workers' prefetch init
container), takes a toy training step per 8 MiB chunk, and rank 0 reports a
checkpoint every epoch. Ray Train writes the checkpoints under
--storage/--name (the blobfs checkpoint mount, shared by every pod), so a
resubmitted job resumes from the newest one.

The "model" is a byte histogram in numpy, so the example runs on the stock
rayproject/ray image; replace train_loop with your framework's loop (for
example TorchTrainer) and keep the data path, storage_path and the resume
logic.
"""

import argparse
import os
import tempfile

import numpy as np
import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.data_parallel_trainer import DataParallelTrainer

CHUNK = 8 << 20


def shard(root, rank, world):
    """Every file under root, sorted, every world-th one from rank."""
    files = []
    for d, _, names in os.walk(root):
        files.extend(os.path.join(d, n) for n in names)
    files.sort()
    return files[rank::world]


def train_loop(config):
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    files = shard(config["data"], rank, world)
    weights, start = np.zeros(256), 0
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = np.load(os.path.join(d, "model.npz"))
            weights, start = state["weights"], int(state["epoch"]) + 1
    for epoch in range(start, config["epochs"]):
        seen = 0
        for path in files:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    hist = np.bincount(np.frombuffer(chunk, dtype=np.uint8), minlength=256)
                    weights += 0.01 * (hist / len(chunk) - weights)
                    seen += len(chunk)
        metrics = {"epoch": epoch, "bytes": seen, "files": len(files)}
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                np.savez(os.path.join(d, "model.npz"), weights=weights, epoch=epoch)
                checkpoint = Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=checkpoint)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpus-per-worker", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()

    ray.init()
    loop_config = {"data": a.data, "epochs": a.epochs}
    run_dir = os.path.join(a.storage, a.name)
    if DataParallelTrainer.can_restore(run_dir):
        print(f"resuming from {run_dir}")
        trainer = DataParallelTrainer.restore(run_dir, train_loop_per_worker=train_loop, train_loop_config=loop_config)
    else:
        trainer = DataParallelTrainer(
            train_loop,
            train_loop_config=loop_config,
            scaling_config=ScalingConfig(
                num_workers=a.workers,
                use_gpu=a.gpus_per_worker > 0,
                resources_per_worker={"GPU": a.gpus_per_worker} if a.gpus_per_worker > 0 else None,
            ),
            run_config=RunConfig(
                name=a.name,
                storage_path=a.storage,
                checkpoint_config=CheckpointConfig(num_to_keep=3),
                failure_config=FailureConfig(max_failures=3),
            ),
        )
    result = trainer.fit()
    print(f"done: {result.metrics} checkpoint {result.checkpoint.path if result.checkpoint else None}")


if __name__ == "__main__":
    main()
