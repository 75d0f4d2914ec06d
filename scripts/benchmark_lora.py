#!/usr/bin/env python
"""Peak memory and time per step of LoRA fine-tuning at ChatGLM3-6B's size, with random weights (no download).

    python scripts/benchmark_lora.py --quantization 8bit --steps 5            # GPU: the authors' setting
    python scripts/benchmark_lora.py --quantization 4bit --gradient_checkpointing true
    python scripts/benchmark_lora.py --tiny true --quantization 4bit --steps 2  # CPU smoke run of the code path
    python scripts/benchmark_lora.py --count_only true                        # trainable parameters, no weights
    python scripts/benchmark_lora.py --count_only true --qkv_adapter separate

Builds a `GlmForCausalLM` with ChatGLM3-6B's dimensions (28 layers, hidden 4096, FFN 13696, 32 heads in 2 key/value
groups of 128 channels, vocab 65024), initialises it on the device in bf16 (meta init, then `normal_` in place),
saves it to a temporary folder and loads it back through the same path as `train_lora.py` (`BitsAndBytesConfig`,
`prepare_model_for_kbit_training`, LoRA r=8 on q/k/v, fused as the authors' adapter unless `--qkv_adapter
separate`). Then runs `--steps` optimizer steps on random token ids at
the authors' batch (12 x `--seq_len`, prompt half masked out of the loss) and prints one JSON line: peak GPU memory
(GiB), seconds per step (after the first), trainable parameters. Needs ~13 GB of disk for the temporary folder.
`--count_only true` builds the model on the meta device (no memory, no disk, any machine) and prints only the
trainable parameters of the adapter.
"""

import json
import os
import resource
import tempfile
import time
from dataclasses import dataclass, field

import torch
from transformers import GlmConfig, GlmForCausalLM

from iamm.llm.lora import QKV_ADAPTERS, LoraArguments, add_lora, load_base_model
from modeling_iamm.cli import check_min, parse_args, script_main

CHATGLM3_6B_DIMS = dict(vocab_size=65024, hidden_size=4096, intermediate_size=13696, num_hidden_layers=28,
                        num_attention_heads=32, num_key_value_heads=2, head_dim=128)
TINY_DIMS = dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16)


@dataclass
class BenchmarkArguments:
    """Options of `benchmark_lora.py`."""

    quantization: str = field(default="8bit", metadata={"help": "8bit, 4bit or none"})
    batch_size: int = field(default=12, metadata={"help": "Sequences per step (authors: 12)"})
    seq_len: int = field(default=512, metadata={"help": "Tokens per sequence"})
    steps: int = field(default=5, metadata={"help": "Optimizer steps (the first is not timed)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward"})
    dtype: str = field(default="bfloat16", metadata={"help": "Weights/compute dtype: bfloat16 or float16 (float32: a CPU "
                                                              "check)"})
    tiny: bool = field(default=False, metadata={"help": "Tiny dimensions (CPU check of the code path)"})
    seed: int = field(default=0, metadata={"help": "Seed"})
    qkv_adapter: str = field(default="fused", metadata={
        "help": "fused (one adapter on q/k/v together, the authors' run) or separate (one per projection)"})
    count_only: bool = field(default=False, metadata={
        "help": "Only count the adapter's trainable parameters (model on the meta device, no weights)"})

    def __post_init__(self):
        if self.quantization not in ("8bit", "4bit", "none"):
            raise ValueError(f"--quantization {self.quantization!r}: choose 8bit, 4bit or none")
        if self.qkv_adapter not in QKV_ADAPTERS:  # (before the model is written)
            raise ValueError(f"--qkv_adapter {self.qkv_adapter!r}: choose one of {QKV_ADAPTERS}")
        check_min("--steps", self.steps, 2)  # the first step is warm-up
        check_min("--batch_size", self.batch_size)
        check_min("--seq_len", self.seq_len, 2)  # half of it is the prompt, masked out of the loss
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"--dtype must be bfloat16, float16 or float32, got {self.dtype!r}")


def glm_config(dims: dict) -> GlmConfig:
    """A `GlmConfig` of `dims` with ChatGLM3's rotary and token settings."""
    return GlmConfig(**dims, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "partial_rotary_factor": 0.5},
                     pad_token_id=0, eos_token_id=2, tie_word_embeddings=False, max_position_embeddings=8192)


def count_trainable(dims: dict, qkv_adapter: str) -> dict:
    """Trainable parameters of the default LoRA (r=8 on q/k/v) on a `GlmForCausalLM` of `dims`, built on the meta
    device (nothing allocated)."""
    with torch.device("meta"):
        model = GlmForCausalLM(glm_config(dims))
    args = LoraArguments(model_name_or_path="unused", data_dir="unused", load_in_8bit=False, qkv_adapter=qkv_adapter)
    trainable, total = add_lora(model, args).get_nb_trainable_parameters()
    return {"dims": "tiny" if dims is TINY_DIMS else "chatglm3-6b", "qkv_adapter": qkv_adapter,
            "trainable_parameters": trainable, "per_layer": trainable // dims["num_hidden_layers"],
            "all_parameters": total}


def random_glm_folder(directory: str, dims: dict, dtype: torch.dtype, device: str) -> None:
    """Save a randomly initialised Glm (initialised on `device`, in `dtype`) as a standard folder."""
    with torch.device("meta"):
        model = GlmForCausalLM(glm_config(dims))
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    # the rotary inv_freq buffer is not saved: from_pretrained recomputes it
    model.save_pretrained(directory)
    del model


def run(args: BenchmarkArguments) -> dict:
    torch.manual_seed(args.seed)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = getattr(torch, args.dtype)
    dims = TINY_DIMS if args.tiny else CHATGLM3_6B_DIMS
    with tempfile.TemporaryDirectory(prefix="glm-benchmark-") as folder:
        random_glm_folder(folder, dims, dtype, device)
        if cuda:
            torch.cuda.empty_cache()
        load = LoraArguments(model_name_or_path=folder, data_dir="unused", torch_dtype=args.dtype,
                             bnb_4bit_compute_dtype=args.dtype, load_in_8bit=args.quantization == "8bit",
                             load_in_4bit=args.quantization == "4bit", qkv_adapter=args.qkv_adapter)
        start = time.perf_counter()
        model = load_base_model(load, device_map={"": 0 if cuda else "cpu"})
        load_s = time.perf_counter() - start
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, load, args.gradient_checkpointing)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.randint(3, dims["vocab_size"], (args.batch_size, args.seq_len), device=device)
    labels = ids.clone()
    labels[:, : args.seq_len // 2] = -100
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype, enabled=cuda):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "dims": "tiny" if args.tiny else "chatglm3-6b",
        "quantization": args.quantization, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "gradient_checkpointing": args.gradient_checkpointing, "dtype": args.dtype, "qkv_adapter": args.qkv_adapter,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "peak_host_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "load_s": round(load_s, 2), "s_per_step": round(sum(times[1:]) / len(times[1:]), 4),
        "loss": round(loss.item(), 4),
    }


@script_main("benchmark_lora")
def main(argv=None):
    (args,) = parse_args((BenchmarkArguments,), argv)
    if args.count_only:
        print(json.dumps(count_trainable(TINY_DIMS if args.tiny else CHATGLM3_6B_DIMS, args.qkv_adapter)))
        return
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
