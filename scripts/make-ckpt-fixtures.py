#!/usr/bin/env python3
"""make-ckpt-fixtures.py writes the checkpoint fixtures of package prefetch.

Usage (Debian bookworm):

    apt-get install -y python3-torch          # torch 1.13, used for torch.save only
    /usr/bin/python3 scripts/make-ckpt-fixtures.py [OUTDIR]

OUTDIR defaults to prefetch/testdata/checkpoints. The script rewrites
everything in OUTDIR except README.md, then records every fact the Go tests assert against in
OUTDIR/manifest.json: which checkpoint is the newest complete one, which
newer ones are half-written, every file's size, every safetensors tensor's
byte range and every DCP storage item's (file, offset, length).

What is real and what is a stand-in is written to OUTDIR/README.md; in short:
  * *.pt/*.pth/*.bin/*.ckpt and the DCP item payloads are real torch.save
    zip archives written by the installed torch (1.13 on Debian), holding small
    stand-in state dicts with the key names the frameworks use;
  * *.safetensors follow the published format byte for byte (this script is
    the writer: 8-byte little-endian header length, compact JSON header padded
    with spaces to a multiple of 8, contiguous little-endian tensor data);
  * DCP .metadata is a real pickle (protocol 4, Python's default) of
    dataclasses named and laid out exactly like PyTorch 2.x's
    torch.distributed.checkpoint classes, registered under PyTorch's own
    module paths, because torch 1.13 has no torch.distributed.checkpoint.
When a torch with torch.distributed.checkpoint is importable, the real
classes are used instead of the stand-ins.
"""

import array
import dataclasses
import enum
import io
import json
import os
import pathlib
import pickle
import shutil
import struct
import sys
import types
import zipfile

import torch

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "prefetch/testdata/checkpoints")
MANIFEST = {"torch_version": torch.__version__, "python_version": sys.version.split()[0], "scenarios": {}}


# ---------------------------------------------------------------- helpers


def rel(p):
    return pathlib.Path(p).relative_to(OUT).as_posix()


def write(path, data):
    path = OUT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tsave(obj):
    """torch.save into bytes: the zip format every .pt/.pth/.bin/.ckpt uses."""
    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


def save_pt(path, obj):
    return write(path, tsave(obj))


def truncate(path, keep):
    """Cut a file like a crashed writer would: the zip's end record is gone."""
    p = OUT / path
    data = p.read_bytes()
    assert keep < len(data) - 22, "truncation must remove the zip end record"
    p.write_bytes(data[:keep])


def small(seed, *shape, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


# ---------------------------------------------------------------- safetensors

ST_DTYPES = {torch.float32: ("F32", 4), torch.float16: ("F16", 2), torch.bfloat16: ("BF16", 2), torch.int64: ("I64", 8)}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        # bf16 is the high half of the f32 bit pattern (round-toward-zero is
        # fine for fixtures); written little-endian.
        f = array.array("f", t.to(torch.float32).flatten().tolist())
        u = array.array("I", f.tobytes())
        return b"".join(struct.pack("<H", x >> 16) for x in u)
    if t.dtype == torch.float16:
        return b"".join(struct.pack("<e", x) for x in t.flatten().tolist())
    if t.dtype == torch.float32:
        return b"".join(struct.pack("<f", x) for x in t.flatten().tolist())
    if t.dtype == torch.int64:
        return b"".join(struct.pack("<q", x) for x in t.flatten().tolist())
    raise ValueError(t.dtype)


def save_safetensors(path, tensors, metadata=None):
    """Write the published safetensors format and return the tensor table.

    Layout: u64 little-endian N, N bytes of JSON, then the data buffer;
    data_offsets are [begin, end) relative to the first byte after the header;
    the JSON is padded with spaces so that 8+N is a multiple of 8."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        t = tensors[name]
        code, size = ST_DTYPES[t.dtype]
        b = tensor_bytes(t)
        assert len(b) == t.numel() * size
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * ((8 - (8 + len(js)) % 8) % 8)
    data = struct.pack("<Q", len(js)) + js + b"".join(blobs)
    write(path, data)
    start = 8 + len(js)
    table = [
        {"file": path, "tensor": n, "off": start + h["data_offsets"][0], "len": h["data_offsets"][1] - h["data_offsets"][0]}
        for n, h in header.items()
        if n != "__metadata__"
    ]
    return {"file": path, "header_len": len(js), "data_start": start, "size": len(data), "tensors": table}


# ---------------------------------------------------------------- DCP classes


def dcp_classes():
    """Return PyTorch's DCP classes, or stand-ins registered under their names.

    The stand-ins mirror torch/distributed/checkpoint/metadata.py and
    filesystem.py of PyTorch 2.x field for field, including
    TensorProperties.__getstate__ (a 5-tuple whose 4th element is the
    _MEM_FORMAT_ENCODING enum), so that pickle records exactly the module and
    class names and the state shapes a real save records."""
    try:
        from torch.distributed.checkpoint import metadata as md  # noqa: F401
        from torch.distributed.checkpoint.filesystem import _StorageInfo

        return types.SimpleNamespace(md=md, StorageInfo=_StorageInfo, real=True)
    except Exception:
        pass

    pkg = "torch.distributed.checkpoint"
    mods = {}
    for name in (pkg, pkg + ".metadata", pkg + ".filesystem"):
        m = types.ModuleType(name)
        sys.modules[name] = m
        mods[name] = m
    setattr(torch.distributed, "checkpoint", mods[pkg])
    md, fsmod = mods[pkg + ".metadata"], mods[pkg + ".filesystem"]

    def register(mod, cls):
        cls.__module__ = mod.__name__
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
        return cls

    @dataclasses.dataclass
    class ChunkStorageMetadata:
        offsets: torch.Size
        sizes: torch.Size

    class _MEM_FORMAT_ENCODING(enum.Enum):
        TORCH_CONTIGUOUS_FORMAT = 0
        TORCH_CHANNELS_LAST = 1
        TORCH_PRESERVE_FORMAT = 2

    @dataclasses.dataclass
    class TensorProperties:
        dtype: torch.dtype = dataclasses.field(default_factory=torch.get_default_dtype)
        layout: torch.layout = dataclasses.field(default=torch.strided)
        requires_grad: bool = False
        memory_format: torch.memory_format = dataclasses.field(default=torch.contiguous_format)
        pin_memory: bool = False

        def __getstate__(self):
            # As in PyTorch: torch.memory_format cannot be pickled.
            return (self.dtype, self.layout, self.requires_grad, _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT, self.pin_memory)

    @dataclasses.dataclass
    class TensorStorageMetadata:
        properties: TensorProperties
        size: torch.Size
        chunks: list

    @dataclasses.dataclass
    class BytesStorageMetadata:
        pass

    @dataclasses.dataclass
    class StorageMeta:
        checkpoint_id: object = None
        save_id: object = None
        load_id: object = None
        modules: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass
    class Metadata:
        state_dict_metadata: dict
        planner_data: object = None
        storage_data: object = None
        storage_meta: object = None
        version: object = None

    @dataclasses.dataclass(frozen=True)
    class MetadataIndex:
        fqn: str
        offset: object = None
        index: object = dataclasses.field(hash=False, compare=False, default=None)

        def __init__(self, fqn, offset=None, index=None):
            object.__setattr__(self, "fqn", fqn)
            object.__setattr__(self, "index", index)
            if offset is not None:
                object.__setattr__(self, "offset", torch.Size(offset))

    @dataclasses.dataclass
    class _StorageInfo:
        relative_path: str
        offset: int
        length: int

    for c in (ChunkStorageMetadata, _MEM_FORMAT_ENCODING, TensorProperties, TensorStorageMetadata,
              BytesStorageMetadata, StorageMeta, Metadata, MetadataIndex):
        register(md, c)
    register(fsmod, _StorageInfo)
    return types.SimpleNamespace(md=md, StorageInfo=_StorageInfo, real=False)


DCP = dcp_classes()


def save_dcp(dirpath, world, state, placement, commit=True):
    """Write a DCP checkpoint the way FileSystemWriter does.

    state maps fqn -> tensor, or -> a Python object (a BYTE_IO item);
    placement maps fqn -> list of (rank, chunk_offsets, chunk_sizes) for
    tensors, or -> rank for bytes. Each rank's items go to __{rank}_0.distcp:
    bytes items first, then tensors, each payload a torch.save archive
    appended to the stream, as _write_files_from_queue does. commit=False
    leaves .metadata.tmp instead of .metadata (a save in progress)."""
    md = DCP.md
    streams = {r: io.BytesIO() for r in range(world)}
    sdm, storage, items = {}, {}, []
    for fqn in state:
        v = state[fqn]
        if isinstance(v, torch.Tensor):
            chunks = []
            for i, (r, offs, sizes) in enumerate(placement[fqn]):
                chunks.append(md.ChunkStorageMetadata(offsets=torch.Size(offs), sizes=torch.Size(sizes)))
            sdm[fqn] = md.TensorStorageMetadata(properties=md.TensorProperties(dtype=v.dtype), size=v.size(), chunks=chunks)
        else:
            sdm[fqn] = md.BytesStorageMetadata()
    for r in range(world):
        s = streams[r]
        for fqn in state:  # bytes first
            v = state[fqn]
            if isinstance(v, torch.Tensor) or placement[fqn] != r:
                continue
            off = s.tell()
            s.write(tsave(v))
            storage[md.MetadataIndex(fqn)] = DCP.StorageInfo(f"__{r}_0.distcp", off, s.tell() - off)
            items.append({"fqn": fqn, "file": f"__{r}_0.distcp", "off": off, "len": s.tell() - off, "bytes": True, "replicated": False, "rank": r})
        for fqn in state:
            v = state[fqn]
            if not isinstance(v, torch.Tensor):
                continue
            for i, (pr, offs, sizes) in enumerate(placement[fqn]):
                if pr != r:
                    continue
                sl = v
                for d, (o, n) in enumerate(zip(offs, sizes)):
                    sl = sl.narrow(d, o, n)
                off = s.tell()
                s.write(tsave(sl.clone()))
                storage[md.MetadataIndex(fqn, offs, i)] = DCP.StorageInfo(f"__{r}_0.distcp", off, s.tell() - off)
                full = list(offs) == [0] * len(offs) and list(sizes) == list(v.shape)
                items.append({"fqn": fqn, "file": f"__{r}_0.distcp", "off": off, "len": s.tell() - off, "bytes": False, "replicated": full, "rank": r})
    for r, s in streams.items():
        write(f"{dirpath}/__{r}_0.distcp", s.getvalue())
    meta = md.Metadata(
        state_dict_metadata=sdm,
        planner_data={fqn: tuple(fqn.split(".")) for fqn in state},
        storage_data=storage,
        storage_meta=md.StorageMeta(checkpoint_id=pathlib.PosixPath("/mnt/ckpt") / dirpath, save_id="8f4c2a57-2a5e-4c55-9d3f-0b8f1c2e7a11"),
        version="1.0.0",
    )
    name = ".metadata" if commit else ".metadata.tmp"
    write(f"{dirpath}/{name}", pickle.dumps(meta, protocol=4))
    return items


def files_under(d):
    out = {}
    for p in sorted((OUT / d).rglob("*")):
        if p.is_file():
            out[rel(p)] = p.stat().st_size
    return out


def scenario(name, **kw):
    MANIFEST["scenarios"][name] = kw


# ---------------------------------------------------------------- DeepSpeed


def ds_model_states(step, dp, mp=1):
    return {
        "module": {"embed.weight": small(step, 4, 4), "head.weight": small(step + 1, 2, 4)},
        "buffer_names": [],
        "optimizer": None,
        "param_shapes": [{"embed.weight": torch.Size([4, 4]), "head.weight": torch.Size([2, 4])}],
        "frozen_param_shapes": None,
        "shared_params": {},
        "frozen_param_fragments": None,
        "lr_scheduler": {"last_epoch": step},
        "data_sampler": None,
        "random_ltd": None,
        "sparse_tensor_module_names": set(),
        "skipped_steps": 0,
        "global_steps": step,
        "global_samples": step * 8,
        "dp_world_size": dp,
        "mp_world_size": mp,
        "ds_config": {"train_batch_size": 8, "zero_optimization": {"stage": 2}},
        "ds_version": "0.14.0",
    }


def ds_optim_states(step, rank, dp):
    return {
        "optimizer_state_dict": {
            "loss_scaler": None,
            "dynamic_loss_scale": False,
            "overflow": False,
            "clip_grad": 1.0,
            "base_optimizer_state": {"state": {0: {"step": torch.tensor(float(step)), "exp_avg": small(rank, 12), "exp_avg_sq": small(rank + 7, 12)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
            "single_partition_of_fp32_groups": [small(rank + 3, 12)],
            "zero_stage": 2,
            "group_paddings": [0],
            "partition_count": [dp],
            "ds_version": "0.14.0",
            "param_slice_mappings": [{}],
        },
        "ds_config": {"train_batch_size": 8, "zero_optimization": {"stage": 2}},
        "ds_version": "0.14.0",
    }


def ds_step(run, step, dp=2, model=True, optim=range(2)):
    d = f"{run}/global_step{step}"
    if model:
        save_pt(f"{d}/mp_rank_00_model_states.pt", ds_model_states(step, dp))
    for r in optim:
        save_pt(f"{d}/zero_pp_rank_{r}_mp_rank_00_optim_states.pt", ds_optim_states(step, r, dp))
    return d


def make_deepspeed():
    run = "deepspeed"
    ds_step(run, 100)
    good = ds_step(run, 200)
    write(f"{run}/latest", b"global_step200")
    # A save in progress: rank 0 has written its optimizer shard, nobody has
    # written model states yet, and `latest` still names global_step200.
    bad = ds_step(run, 300, model=False, optim=[0])
    files = files_under(good)
    files[f"{run}/latest"] = (OUT / run / "latest").stat().st_size
    scenario(
        "deepspeed", dir=run, layout="deepspeed", latest=good, step=200, skipped=[bad], files=files,
        rank_files={
            # rank r of 2 reads the model states and its own optimizer shard.
            "0": [f"{run}/latest", f"{good}/mp_rank_00_model_states.pt", f"{good}/zero_pp_rank_0_mp_rank_00_optim_states.pt"],
            "1": [f"{run}/latest", f"{good}/mp_rank_00_model_states.pt", f"{good}/zero_pp_rank_1_mp_rank_00_optim_states.pt"],
        },
    )

    # `latest` names a tag whose directory lacks model states: fall back to
    # the newest complete global_step older than it.
    run = "deepspeed-stale-latest"
    good = ds_step(run, 10)
    bad = ds_step(run, 20, model=False)
    write(f"{run}/latest", b"global_step20\n")
    files = files_under(good)
    files[f"{run}/latest"] = (OUT / run / "latest").stat().st_size
    scenario("deepspeed-stale-latest", dir=run, layout="deepspeed", latest=good, step=10, skipped=[bad], files=files)


# ---------------------------------------------------------------- Hugging Face


def trainer_state(step, max_steps=400):
    return {
        "best_global_step": None,
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": step / max_steps,
        "eval_steps": 500,
        "global_step": step,
        "is_hyper_param_search": False,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        "log_history": [
            {"epoch": s / max_steps, "grad_norm": 1.25, "learning_rate": 5e-05 * (1 - s / max_steps), "loss": 2.5 - s / 1000, "step": s}
            for s in range(50, step + 1, 50)
        ],
        "logging_steps": 50,
        "max_steps": max_steps,
        "num_input_tokens_seen": 0,
        "num_train_epochs": 1,
        "save_steps": 100,
        "stateful_callbacks": {
            "TrainerControl": {
                "args": {"should_epoch_stop": False, "should_evaluate": False, "should_log": False, "should_save": True, "should_training_stop": False},
                "attributes": {},
            }
        },
        "total_flos": 1234567.0,
        "train_batch_size": 8,
        "trial_name": None,
        "trial_params": None,
    }


HF_CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "model_type": "llama", "num_hidden_layers": 2, "torch_dtype": "bfloat16", "vocab_size": 16}


def hf_model_tensors(seed):
    return {
        "model.embed_tokens.weight": small(seed, 16, 8, dtype=torch.bfloat16),
        "model.layers.0.self_attn.q_proj.weight": small(seed + 1, 8, 8, dtype=torch.bfloat16),
        "model.layers.1.self_attn.q_proj.weight": small(seed + 2, 8, 8, dtype=torch.bfloat16),
        "model.norm.weight": small(seed + 3, 8, dtype=torch.float32),
        "lm_head.weight": small(seed + 4, 16, 8, dtype=torch.float16),
    }


def hf_common(d, step, world):
    write(f"{d}/config.json", json.dumps(HF_CONFIG, indent=2, sort_keys=True).encode() + b"\n")
    save_pt(f"{d}/optimizer.pt", {"state": {0: {"step": torch.tensor(float(step)), "exp_avg": small(step, 8), "exp_avg_sq": small(step + 1, 8)}}, "param_groups": [{"lr": 5e-05, "params": [0]}]})
    save_pt(f"{d}/scheduler.pt", {"last_epoch": step, "base_lrs": [5e-05], "_step_count": step + 1})
    if world == 1:
        save_pt(f"{d}/rng_state.pth", {"python": (3, (1, 2, 3), None), "cpu": torch.random.get_rng_state()})
    else:
        for r in range(world):
            save_pt(f"{d}/rng_state_{r}.pth", {"python": (3, (r, 2, 3), None), "cpu": torch.random.get_rng_state()})
    # Trainer pickles TrainingArguments with torch.save; a dict stands in.
    save_pt(f"{d}/training_args.bin", {"output_dir": "/mnt/ckpt/hf", "per_device_train_batch_size": 8, "save_steps": 100})


def make_hf():
    run = "hf"
    # checkpoint-100: one model.safetensors, single process.
    d = f"{run}/checkpoint-100"
    st100 = save_safetensors(f"{d}/model.safetensors", hf_model_tensors(100), {"format": "pt"})
    hf_common(d, 100, 1)
    write(f"{d}/trainer_state.json", json.dumps(trainer_state(100), indent=2, sort_keys=True).encode() + b"\n")

    # checkpoint-200: sharded safetensors + index, two processes.
    d = f"{run}/checkpoint-200"
    t = hf_model_tensors(200)
    shard1 = {k: t[k] for k in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight")}
    shard2 = {k: t[k] for k in t if k not in shard1}
    sts = [
        save_safetensors(f"{d}/model-00001-of-00002.safetensors", shard1, {"format": "pt"}),
        save_safetensors(f"{d}/model-00002-of-00002.safetensors", shard2, {"format": "pt"}),
    ]
    total = sum(x["len"] for s in sts for x in s["tensors"])
    index = {"metadata": {"total_size": total}, "weight_map": {x["tensor"]: pathlib.Path(s["file"]).name for s in sts for x in s["tensors"]}}
    write(f"{d}/model.safetensors.index.json", json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")
    hf_common(d, 200, 2)
    write(f"{d}/trainer_state.json", json.dumps(trainer_state(200), indent=2, sort_keys=True).encode() + b"\n")
    good = d

    # checkpoint-300: crashed before Trainer wrote trainer_state.json.
    d = f"{run}/checkpoint-300"
    t = hf_model_tensors(300)
    shard1 = {k: t[k] for k in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight")}
    shard2 = {k: t[k] for k in t if k not in shard1}
    save_safetensors(f"{d}/model-00001-of-00002.safetensors", shard1, {"format": "pt"})
    save_safetensors(f"{d}/model-00002-of-00002.safetensors", shard2, {"format": "pt"})
    write(f"{d}/model.safetensors.index.json", (OUT / good / "model.safetensors.index.json").read_bytes())
    hf_common(d, 300, 2)
    bad = d
    # A staging directory of transformers 4.36 (tmp-checkpoint-N) is not a checkpoint.
    write(f"{run}/tmp-checkpoint-400/config.json", b"{}\n")

    scenario(
        "hf", dir=run, layout="huggingface", latest=good, step=200, skipped=[bad], files=files_under(good),
        safetensors=sts,
        rank_files={
            "0": sorted(set(files_under(good)) - {f"{good}/rng_state_1.pth"}),
            "1": sorted(set(files_under(good)) - {f"{good}/rng_state_0.pth"}),
        },
    )
    scenario("hf-single", dir=f"{run}/checkpoint-100", layout="huggingface", latest=f"{run}/checkpoint-100", step=100, skipped=[], files=files_under(f"{run}/checkpoint-100"), safetensors=[st100])


# ---------------------------------------------------------------- DCP


def dcp_state(step):
    return {
        "model.embed.weight": small(step, 8, 4),
        "model.layer.weight": small(step + 1, 4, 4),
        "optim.state.model.layer.weight.exp_avg": small(step + 2, 4, 4),
        "optim.state.model.layer.weight.step": torch.tensor(float(step)),
        "optim.param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "params": ["model.layer.weight"]}],
    }


DCP_PLACEMENT = {
    # Replicated (deduplicated onto rank 1): every rank still reads it.
    "model.embed.weight": [(1, [0, 0], [8, 4])],
    # Row-sharded over two ranks.
    "model.layer.weight": [(0, [0, 0], [2, 4]), (1, [2, 0], [2, 4])],
    "optim.state.model.layer.weight.exp_avg": [(0, [0, 0], [2, 4]), (1, [2, 0], [2, 4])],
    # A 0-dim tensor, saved once.
    "optim.state.model.layer.weight.step": [(0, [], [])],
    # A BYTE_IO item.
    "optim.param_groups": 0,
}


def make_dcp():
    run = "dcp"
    save_dcp(f"{run}/step-10", 2, dcp_state(10), DCP_PLACEMENT)
    items = save_dcp(f"{run}/step-20", 2, dcp_state(20), DCP_PLACEMENT)
    # step-30 is mid-save: the coordinator has written .metadata.tmp but not
    # yet renamed it.
    save_dcp(f"{run}/step-30", 2, dcp_state(30), DCP_PLACEMENT, commit=False)
    good = f"{run}/step-20"
    scenario("dcp", dir=run, layout="dcp", latest=good, step=20, skipped=[f"{run}/step-30"], files=files_under(good), dcp_items=items, dcp_real_classes=DCP.real)


# ---------------------------------------------------------------- Ray Train


def make_ray():
    # Ray Train v1 (Tune-based): checkpoint_%06d, arbitrary content; here the
    # documented pattern of one file per worker rank.
    run = "ray/TorchTrainer_2f1c3_00000"
    for i in range(3):
        d = f"{run}/checkpoint_{i:06d}"
        for r in range(2):
            save_pt(f"{d}/model-rank={r}.pt", {"model": {"w": small(10 * i + r, 6)}, "epoch": i})
    # checkpoint_000002 was being uploaded: rank 1's file is cut short.
    truncate(f"{run}/checkpoint_000002/model-rank=1.pt", 200)
    good = f"{run}/checkpoint_000001"
    scenario(
        "ray", dir=run, layout="ray", content="files", latest=good, step=1, skipped=[f"{run}/checkpoint_000002"], files=files_under(good),
        rank_files={"0": [f"{good}/model-rank=0.pt"], "1": [f"{good}/model-rank=1.pt"]},
    )

    # Ray Train v2: checkpoint_<date_str(include_ms=True)> dirs and the
    # controller's checkpoint_manager_snapshot.json; content is DCP here.
    run = "ray-v2/llm_pretrain"
    names = ["checkpoint_2025-01-15_10-00-00.000001", "checkpoint_2025-01-15_10-10-00.000002", "checkpoint_2025-01-15_10-20-00.000003"]
    items = None
    for i, n in enumerate(names):
        it = save_dcp(f"{run}/{n}", 2, dcp_state(100 * (i + 1)), DCP_PLACEMENT)
        if i == 1:
            items = it
    # The third one has every file, but the controller has not recorded it:
    # its upload may still be running on other workers.
    snap = {
        "version": 0,
        "checkpoint_results": [{"version": 0, "checkpoint_dir_name": n, "metrics": {"loss": 1.0 - 0.1 * i}} for i, n in enumerate(names[:2])],
        "latest_checkpoint_result": {"version": 0, "checkpoint_dir_name": names[1], "metrics": {"loss": 0.9}},
    }
    write(f"{run}/checkpoint_manager_snapshot.json", json.dumps(snap, separators=(",", ":")).encode())
    write(f"{run}/.validate_storage_marker", b"")
    good = f"{run}/{names[1]}"
    scenario("ray-v2", dir=run, layout="ray", content="dcp", latest=good, step=-1, skipped=[f"{run}/{names[2]}"], files=files_under(good), dcp_items=items)

    # Ray Train + Hugging Face (RayTrainReportCallback copies checkpoint-N
    # into <ray checkpoint>/checkpoint/).
    run = "ray-hf/TorchTrainer_9a0b1_00000"
    d = f"{run}/checkpoint_000004/checkpoint"
    save_safetensors(f"{d}/model.safetensors", hf_model_tensors(4), {"format": "pt"})
    hf_common(d, 40, 1)
    write(f"{d}/trainer_state.json", json.dumps(trainer_state(40), indent=2, sort_keys=True).encode() + b"\n")
    # checkpoint_000005's HF content lacks trainer_state.json: Trainer had
    # not finished that save when it was reported.
    d = f"{run}/checkpoint_000005/checkpoint"
    save_safetensors(f"{d}/model.safetensors", hf_model_tensors(5), {"format": "pt"})
    hf_common(d, 50, 1)
    good = f"{run}/checkpoint_000004"
    scenario("ray-hf", dir=run, layout="ray", content="huggingface", latest=good, step=4, skipped=[f"{run}/checkpoint_000005"], files=files_under(good))


# ---------------------------------------------------------------- Lightning


def lightning_ckpt(epoch, step):
    return {
        "epoch": epoch,
        "global_step": step,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {"layer.weight": small(step, 4, 4), "layer.bias": small(step + 1, 4)},
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": epoch}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, 'train_time_interval': None}": {"best_model_path": ""}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.01},
    }


def make_lightning():
    run = "lightning/version_0/checkpoints"
    save_pt(f"{run}/epoch=0-step=99.ckpt", lightning_ckpt(0, 99))
    save_pt(f"{run}/epoch=1-step=200.ckpt", lightning_ckpt(1, 200))
    save_pt(f"{run}/last.ckpt", lightning_ckpt(1, 200))
    # A second run in the same directory was writing last-v1.ckpt when it died.
    save_pt(f"{run}/last-v1.ckpt", lightning_ckpt(2, 300))
    truncate(f"{run}/last-v1.ckpt", 300)
    scenario("lightning", dir=run, layout="lightning", latest=f"{run}/last.ckpt", step=-1, skipped=[f"{run}/last-v1.ckpt"], files={f"{run}/last.ckpt": (OUT / run / "last.ckpt").stat().st_size})

    # No last*.ckpt: newest by step (numerically: 1000 > 999), skipping a
    # truncated newer one.
    run = "lightning-steps"
    save_pt(f"{run}/epoch=0-step=999.ckpt", lightning_ckpt(0, 999))
    save_pt(f"{run}/epoch=1-step=1000.ckpt", lightning_ckpt(1, 1000))
    save_pt(f"{run}/epoch=1-step=1500.ckpt", lightning_ckpt(1, 1500))
    truncate(f"{run}/epoch=1-step=1500.ckpt", 256)
    good = f"{run}/epoch=1-step=1000.ckpt"
    scenario("lightning-steps", dir=run, layout="lightning", latest=good, step=1000, skipped=[f"{run}/epoch=1-step=1500.ckpt"], files={good: (OUT / good).stat().st_size})


# ---------------------------------------------------------------- malformed


class _Evil:
    """Pickles as a call of os.system: what a hostile .metadata looks like."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def make_malformed():
    d = "malformed"
    write(f"{d}/dcp-evil/.metadata", pickle.dumps(_Evil(), protocol=4))
    write(f"{d}/dcp-evil/__0_0.distcp", b"\0" * 16)
    write(f"{d}/dcp-json/.metadata", b'{"state_dict_metadata": {}}\n')
    write(f"{d}/dcp-json/__0_0.distcp", b"\0" * 16)
    # A valid pickle of the wrong thing.
    write(f"{d}/dcp-dict/.metadata", pickle.dumps({"state_dict_metadata": {}}, protocol=4))
    # A real Metadata whose storage file is shorter than storage_data says.
    save_dcp(f"{d}/dcp-short", 1, {"w": small(1, 4, 4)}, {"w": [(0, [0, 0], [4, 4])]})
    p = OUT / d / "dcp-short" / "__0_0.distcp"
    p.write_bytes(p.read_bytes()[:100])
    scenario("malformed", dir=d)


def main():
    # Rewrite everything but the hand-written README.md.
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.iterdir():
        if p.name == "README.md":
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    make_deepspeed()
    make_hf()
    make_dcp()
    make_ray()
    make_lightning()
    make_malformed()
    (OUT / "manifest.json").write_text(json.dumps(MANIFEST, indent=1, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file() and p.name != "README.md")
    print(f"wrote {OUT} ({total} bytes, DCP classes {'real' if DCP.real else 'stand-in'})")


if __name__ == "__main__":
    main()
