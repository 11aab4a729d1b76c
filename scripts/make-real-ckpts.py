#!/usr/bin/env python3
"""make-real-ckpts.py saves checkpoints with the real frameworks for package prefetch.

Usage (a machine with PyTorch 2.x, safetensors, transformers and Lightning;
the GPU is not needed, everything runs on the CPU so the output is small and
deterministic in shape):

    python3 scripts/make-real-ckpts.py OUTDIR

Unlike make-ckpt-fixtures.py, which writes stand-ins byte by byte, every
checkpoint file here is written by the framework that users run:

  * dcp/          torch.distributed.checkpoint.save from two gloo ranks, a model
                  sharded with FSDP2 (fully_shard) plus an unsharded buffer and
                  non-tensor state (bytes items), Adam state via get_state_dict;
  * hf/           transformers.Trainer checkpoint-N directories of a tiny Llama;
  * hf-sharded/   the same Trainer checkpoint with the model re-saved by
                  save_pretrained(max_shard_size=...) into several shards;
  * lightning/    lightning.Trainer with ModelCheckpoint(save_last=True);
  * deepspeed/    deepspeed.DeepSpeedEngine.save_checkpoint, when deepspeed
                  is importable (skipped otherwise, and said so).

Newer, half-written checkpoints are made the way a crash leaves them (a DCP
save without its .metadata, a Trainer save without trainer_state.json, a
truncated Lightning .ckpt), so FindLatest must skip them.

The facts the Go tests assert are read back through the frameworks' own
readers (FileSystemReader.read_metadata for DCP, the safetensors header) and
written to OUTDIR/manifest.json in the schema of the stand-in manifest.
"""

import json
import os
import pathlib
import shutil
import struct
import sys
import traceback

import torch

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "prefetch/testdata/real")
MANIFEST = {"torch_version": torch.__version__, "python_version": sys.version.split()[0], "scenarios": {}, "versions": {}, "errors": {}}


def rel(p):
    return pathlib.Path(p).relative_to(OUT).as_posix()


def files_under(d):
    out = {}
    for p in sorted((OUT / d).rglob("*")):
        if p.is_file():
            out[rel(p)] = p.stat().st_size
    return out


def scenario(name, **kw):
    MANIFEST["scenarios"][name] = kw


def safetensors_facts(path):
    """The header facts of one .safetensors file, read by the format's rules."""
    data = (OUT / path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    start = 8 + n
    tensors = []
    for name, v in sorted(header.items()):
        if name == "__metadata__":
            continue
        b, e = v["data_offsets"]
        tensors.append({"file": path, "tensor": name, "off": start + b, "len": e - b})
    return {"file": path, "header_len": n, "data_start": start, "size": len(data), "tensors": tensors}


def all_safetensors(d):
    return [safetensors_facts(rel(p)) for p in sorted((OUT / d).rglob("*.safetensors"))]


# ---------------------------------------------------------------- DCP


def _dcp_rank(rank, world, port, root):
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(16, 8)
            self.layer = nn.Linear(8, 8)
            # A buffer is not sharded by FSDP2: every rank holds all of it, so
            # DCP saves it once (a replicated item).
            self.register_buffer("pos", torch.arange(8, dtype=torch.float32))

        def forward(self, x):
            return self.layer(self.embed(x)) + self.pos

    model = Net()
    try:
        from torch.distributed.fsdp import fully_shard

        fully_shard(model, mesh=mesh)
    except Exception as e:  # noqa: BLE001  recorded; the save below still runs
        print(f"rank {rank}: fully_shard on CPU failed, saving unsharded: {e}", flush=True)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    from torch.distributed.checkpoint.state_dict import get_state_dict

    for step in (10, 20, 30):
        loss = model(torch.arange(4)).sum()
        loss.backward()
        optim.step()
        optim.zero_grad()
        msd, osd = get_state_dict(model, optim)
        state = {"model": msd, "optim": osd, "step": step, "extra": {"lr": 0.01, "note": "blobfs"}}
        dcp.save(state, checkpoint_id=os.path.join(root, f"step-{step}"))
        dist.barrier()
    dist.destroy_process_group()


def make_dcp():
    import socket

    import torch.multiprocessing as mp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    d = "dcp"
    root = OUT / d
    root.mkdir(parents=True)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mp.spawn(_dcp_rank, args=(2, port, str(root)), nprocs=2, join=True)
    # A crash before the coordinator's finish: the data files are there,
    # the .metadata is not.
    (root / "step-30" / ".metadata").unlink()

    md = FileSystemReader(str(root / "step-20")).read_metadata()
    items = []
    for idx, info in md.storage_data.items():
        sm = md.state_dict_metadata[idx.fqn]
        is_bytes = isinstance(sm, BytesStorageMetadata)
        replicated = False
        if not is_bytes:
            ch = sm.chunks
            replicated = len(ch) == 1 and all(o == 0 for o in ch[0].offsets) and list(ch[0].sizes) == list(sm.size)
        path = info.relative_path
        rank = int(path.split("_")[2]) if path.startswith("__") else -1
        items.append({"fqn": idx.fqn, "file": path, "off": info.offset, "len": info.length, "bytes": is_bytes, "replicated": replicated, "rank": rank})
    items.sort(key=lambda i: (i["file"], i["off"]))
    scenario("dcp", dir=d, layout="dcp", latest=f"{d}/step-20", step=20, skipped=[f"{d}/step-30"],
             files=files_under(f"{d}/step-20"), dcp_items=items, dcp_real_classes=True)


# ---------------------------------------------------------------- Hugging Face


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


class _Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        ids = torch.arange(8) + (i % 8)
        return {"input_ids": ids, "labels": ids.clone()}


def make_hf():
    from transformers import Trainer, TrainingArguments

    d = "hf"
    model = tiny_llama()
    args = TrainingArguments(output_dir=str(OUT / d), max_steps=6, save_steps=2, per_device_train_batch_size=4,
                             report_to=[], logging_steps=1, seed=0, use_cpu=True, save_strategy="steps",
                             dataloader_num_workers=0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=_Tokens()).train()
    # A save interrupted before its last file: Trainer writes
    # trainer_state.json after the weights and optimizer.
    (OUT / d / "checkpoint-6" / "trainer_state.json").unlink()
    scenario("hf", dir=d, layout="huggingface", latest=f"{d}/checkpoint-4", step=4, skipped=[f"{d}/checkpoint-6"],
             files=files_under(f"{d}/checkpoint-4"), safetensors=all_safetensors(f"{d}/checkpoint-4"))

    # The same checkpoint as a large model's would be: weights in several
    # shards plus model.safetensors.index.json, written by save_pretrained.
    s = "hf-sharded"
    src = OUT / d / "checkpoint-4"
    dst = OUT / s / "checkpoint-4"
    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    model.save_pretrained(str(dst), max_shard_size="4KB")
    scenario("hf-sharded", dir=s, layout="huggingface", latest=f"{s}/checkpoint-4", step=4, skipped=[],
             files=files_under(f"{s}/checkpoint-4"), safetensors=all_safetensors(f"{s}/checkpoint-4"))


# ---------------------------------------------------------------- Lightning


def make_lightning():
    try:
        import lightning as L
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger
    except ImportError:
        import pytorch_lightning as L
        from pytorch_lightning.callbacks import ModelCheckpoint
        from pytorch_lightning.loggers import CSVLogger
    MANIFEST["versions"]["lightning"] = L.__version__

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, _):
            return self.layer(batch).sum()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

    d = "lightning"
    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=2)
    ckpt = ModelCheckpoint(every_n_train_steps=2, save_top_k=-1, save_last=True)
    trainer = L.Trainer(default_root_dir=str(OUT / d), max_steps=6, callbacks=[ckpt], accelerator="cpu",
                        logger=CSVLogger(str(OUT / d), name="lightning_logs"), enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(Lit(), data)
    cdir = f"{d}/lightning_logs/version_0/checkpoints"
    names = sorted(p.name for p in (OUT / cdir).iterdir())
    # A save cut short (an upload in progress): a newer last-v1.ckpt whose
    # zip is truncated, as Lightning's own versioned name for a second "last".
    last = OUT / cdir / "last.ckpt"
    (OUT / cdir / "last-v1.ckpt").write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    scenario("lightning", dir=cdir, layout="lightning", latest=f"{cdir}/last.ckpt", step=-1,
             skipped=[f"{cdir}/last-v1.ckpt"], files={f"{cdir}/last.ckpt": last.stat().st_size}, saved=names)

    # Without last.ckpt, the newest by step must win, and a truncated newer
    # step must be skipped.
    s = "lightning-steps"
    (OUT / s).mkdir()
    steps = [n for n in names if n.startswith("epoch=")]
    for n in steps:
        shutil.copy(OUT / cdir / n, OUT / s / n)

    def stepnum(n):
        return int(n.split("step=")[1].split(".")[0].split("-")[0])

    newest = max(steps, key=stepnum)
    src = OUT / s / newest
    cut = OUT / s / newest.replace(f"step={stepnum(newest)}", f"step={stepnum(newest) + 100}")
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    scenario("lightning-steps", dir=s, layout="lightning", latest=f"{s}/{newest}", step=stepnum(newest),
             skipped=[rel(cut)], files={f"{s}/{newest}": src.stat().st_size})


# ---------------------------------------------------------------- DeepSpeed


def make_deepspeed():
    import deepspeed  # noqa: F401  (skipped, and recorded, when absent)

    MANIFEST["versions"]["deepspeed"] = deepspeed.__version__
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29531", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    cfg = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01, "torch_adam": True}},
           "zero_optimization": {"stage": 1}}
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    d = "deepspeed"
    dev = engine.device
    for step in (1, 2):
        loss = engine(torch.randn(2, 8, device=dev)).sum()
        engine.backward(loss)
        engine.step()
        engine.save_checkpoint(str(OUT / d), tag=f"global_step{step * 100}")
    latest = (OUT / d / "latest").read_text().strip()
    scenario("deepspeed", dir=d, layout="deepspeed", latest=f"{d}/{latest}", step=int(latest.removeprefix("global_step")),
             skipped=[], files={**files_under(f"{d}/{latest}"), f"{d}/latest": (OUT / d / "latest").stat().st_size})


def main():
    # Rewrite everything but the hand-written README.md.
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.iterdir():
        if p.name != "README.md":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for mod in ("transformers", "safetensors", "accelerate"):
        try:
            MANIFEST["versions"][mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            MANIFEST["versions"][mod] = f"missing: {e}"
    for make in (make_dcp, make_hf, make_lightning, make_deepspeed):
        try:
            make()
            print(f"{make.__name__}: ok", flush=True)
        except Exception as e:  # noqa: BLE001  one framework's failure must not lose the others
            traceback.print_exc()
            MANIFEST["errors"][make.__name__] = f"{type(e).__name__}: {e}"
            print(f"{make.__name__}: FAILED {e}", flush=True)
    (OUT / "manifest.json").write_text(json.dumps(MANIFEST, indent=1, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file() and p.name != "README.md")
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
