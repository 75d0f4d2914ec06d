#!/usr/bin/env python
"""Benchmark IAMM at the paper's configuration: train-step time, greedy generation time, evaluation-style inference
throughput, parameters, peak memory, and (with --count_ops) the operators a train step and a decoding step issue.

Batches are synthetic but ED-like (seeded): a vocabulary of 23,714 words, batch 16, utterances of 8-25 words,
situations of 10-30, targets of 8-20, knowledge of 10-25 words per relation, and contexts of 1, 3 and 5
utterances (one batch shape each). Nothing is downloaded. With `--data` (an ED source), the batches are instead
16 samples drawn at random (seeded) from a split, as a shuffled loader gives them, their words in the vocabulary
(filled up to 23,714 with made-up words), knowledge synthetic as above; times are reported over all batches
(`context_ed`), and train steps by the longest context of the batch (`train_step_s_by_context_turns`);
`--context_turns` does not apply. That is the side-by-side setting
of the authors' code's timing harness (random real ED contexts, batch 16, the same vocabulary size).

    python scripts/benchmark.py --json                       # paper configuration, CPU
    python scripts/benchmark.py --device cuda --dtype bfloat16 --json
    python scripts/benchmark.py --json --steps 1 --generation_runs 1 --context_turns 3 --count_ops true
    python scripts/benchmark.py --json --compile true         # the train step through torch.compile
    python scripts/benchmark.py --json --steps 1 --generation_runs 1 --context_turns 3 --count_ops true --compile true
    python scripts/benchmark.py --json --matmul_time true    # CPU: how much of a step is matrix products
    python scripts/benchmark.py --json --data path/to/ed --steps 20 --generation_runs 5   # real ED batches

With --count_ops and --compile, the JSON also has the compiled step's counts (`compiled_train_step_top_level_ops`,
`compiled_train_step_generated_kernels`: the C++ kernels torch.compile generated on CPU, each one launch;
`compiled_graphs`: the graphs Dynamo built, recompilations included). On CUDA, count launches with `*_gpu_kernels`.
With --compile, the train-step times are `compiled_train_step_*` and the steps are not timed eagerly.
The forward has no graph break (no host sync, no data-dependent shape), so a step is one graph forward and one
backward. On CUDA, `*_gpu_kernels` counts every kernel the GPU ran.

Training with torch.compile: `scripts/train.py ... --torch_compile true` (Trainer's `torch_compile`,
`torch_compile_backend`, `torch_compile_mode` arguments); it pads every length to a multiple of 8
(`--pad_to_multiple_of`), so a few shapes cover ED, and the first batches of each new shape recompile.
"""

import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from modeling_iamm import IAMMConfig, IAMMDataCollator, IAMMForConditionalGeneration, build_tokenizer
from modeling_iamm.cli import check_min, parse_args, script_main
from modeling_iamm.evaluation import compiled_graphs
from modeling_iamm.training import COMPILE_PAD_MULTIPLE


@dataclass
class BenchmarkArguments:
    vocab_size: int = field(default=23714, metadata={"help": "Vocabulary size (paper: about 23.7k)."})
    batch_size: int = field(default=16, metadata={"help": "Dialogues per batch (paper: 16)."})
    context_turns: List[int] = field(default_factory=lambda: [1, 3, 5], metadata={"help": "Context sizes to time."})
    data: Optional[str] = field(
        default=None, metadata={"help": "An ED source: time random batches of its --split instead of synthetic ones."}
    )
    split: str = field(default="valid", metadata={"help": "The split of --data to draw batches from."})
    steps: int = field(default=10, metadata={"help": "Timed train steps per context size (after 2 warm-up steps)."})
    generation_runs: int = field(default=3, metadata={"help": "Timed generate() calls."})
    new_tokens: int = field(default=30, metadata={"help": "Tokens to generate greedily."})
    knowledge: bool = field(default=True, metadata={"help": "Include knowledge (the implicit branch)."})
    device: str = field(default="cpu", metadata={"help": "torch device."})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16 (autocast on CUDA)."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: leave the default)."})
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic data and the model."})
    count_ops: bool = field(
        default=False,
        metadata={"help": "Also count the top-level operators of one train step and of one decoding step (torch.profiler)."},
    )
    matmul_time: bool = field(
        default=False,
        metadata={"help": "Also profile one train step and one greedy generation (CPU) and report the seconds spent in "
                          "matrix products, and in the products with the vocabulary (the output projection), with "
                          "these kernels and shapes."},
    )
    inference_samples: int = field(
        default=64, metadata={"help": "Synthetic samples for the evaluation-style inference throughput (0: skip)."}
    )
    compile: bool = field(default=False, metadata={"help": "Run the train steps through torch.compile(model)."})
    compile_mode: str = field(
        default="default",
        metadata={"help": "torch.compile mode of the train step: 'default', 'reduce-overhead' (CUDA graphs) or "
                          "'max-autotune' (generation always compiles in the default mode)."},
    )
    json: bool = field(default=False, metadata={"help": "Print one JSON object instead of a table."})

    def __post_init__(self):
        check_min("--vocab_size", self.vocab_size, 8)  # the 7 special tokens and a word
        for flag in ("batch_size", "steps", "generation_runs", "new_tokens"):
            check_min(f"--{flag}", getattr(self, flag))
        for flag in ("threads", "inference_samples"):
            check_min(f"--{flag}", getattr(self, flag), 0)
        for turns in self.context_turns:
            check_min("--context_turns", turns)
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.compile_mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ValueError(f"--compile_mode must be default, reduce-overhead, max-autotune or "
                             f"max-autotune-no-cudagraphs, got {self.compile_mode!r}")


def _random_text(words: List[str], rng: torch.Generator):
    def text(lo, hi):
        n = int(torch.randint(lo, hi + 1, (1,), generator=rng))
        return " ".join(words[int(i)] for i in torch.randint(len(words), (n,), generator=rng))

    return text


def synthetic_knowledge(sample: dict, words: List[str], rng: torch.Generator) -> dict:
    """Knowledge texts of 10-25 random words for the situation and each utterance (5 relations)."""
    text = _random_text(words, rng)
    sample["situation_knowledge"] = [text(10, 25) for _ in range(5)]
    sample["context_knowledge"] = [[text(10, 25) for _ in range(5)] for _ in sample["context"]]
    return sample


def synthetic_samples(args: BenchmarkArguments, turns: int, words: List[str], rng: torch.Generator):
    text = _random_text(words, rng)

    samples = []
    for _ in range(args.batch_size):
        t = int(torch.randint(1, turns + 1, (1,), generator=rng)) if turns > 1 else 1
        t = turns if not samples else t  # the longest context of the batch has exactly `turns` utterances
        t = t if t % 2 == 1 else t - 1  # ED contexts end with the speaker: odd lengths
        sample = {
            "emotion_id": int(torch.randint(32, (1,), generator=rng)),
            "situation": text(10, 30),
            "context": [text(8, 25) for _ in range(t)],
            "context_roles": ["speaker" if i % 2 == 0 else "listener" for i in range(t)],
            "target": text(8, 20),
        }
        samples.append(synthetic_knowledge(sample, words, rng) if args.knowledge else sample)
    return samples


def ed_samples(args: BenchmarkArguments) -> List[dict]:
    """Every listener-turn sample of `args.split` of the ED source `args.data`."""
    from modeling_iamm.data import build_samples, load_empathetic_dialogues

    columns = ["emotion_id", "situation", "context", "context_roles", "target"]
    return build_samples(load_empathetic_dialogues(args.data, splits=[args.split])[args.split]).select_columns(
        columns).to_list()


def vocabulary(args: BenchmarkArguments, samples: Optional[List[dict]]) -> List[str]:
    """`vocab_size - 7` words (7 special tokens): the samples' words first (most frequent first), then made-up ones."""
    from collections import Counter

    from modeling_iamm.text import word_tokenize

    counts: Counter = Counter()
    for sample in samples or []:
        for text in [sample["situation"], sample["target"], *sample["context"]]:
            counts.update(word_tokenize(text))
    words = [w for w, _ in counts.most_common(args.vocab_size - 7)]
    fillers, i = [], 0
    while len(words) + len(fillers) < args.vocab_size - 7:  # made-up words that are not real ones
        if f"w{i}" not in counts:
            fillers.append(f"w{i}")
        i += 1
    return words + fillers


def draw_batches(args: BenchmarkArguments, pool: List[dict], n: int, words: List[str], rng: torch.Generator):
    """`n` batches of `batch_size` samples drawn at random from `pool` (knowledge added when --knowledge)."""
    batches = []
    for _ in range(n):
        picked = [dict(pool[int(i)]) for i in torch.randint(len(pool), (args.batch_size,), generator=rng)]
        batches.append([synthetic_knowledge(s, words, rng) if args.knowledge else s for s in picked])
    return batches


def to_device(batch, device):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def profile_launches(fn, device: str = "cpu") -> dict:
    """What `fn()` launches: `top_level_ops` (aten operators not called from inside another one), and
    `generated_kernels` (the C++ kernels torch.compile generated on CPU, named in the profile when
    `torch._inductor.config.cpp.enable_kernel_profile` was on at compile time); on CUDA also `gpu_kernels`
    (every kernel the GPU ran, generated or not)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    counts = {
        "top_level_ops": sum(1 for e in events if e.name.startswith("aten::")
                             and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))),
        "generated_kernels": sum(1 for e in events if "cpp_fused" in e.name),
    }
    if cuda:
        counts["gpu_kernels"] = sum(1 for e in events if e.device_type == DeviceType.CUDA)
    return counts


MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matrix_product_time(fn: Callable[[], object], vocab_size: int) -> Dict[str, float]:
    """Seconds `fn()` spends in matrix products (CPU, `torch.profiler` self time): `profiled_s` (every operator's
    self time), `matrix_products_s` (`MATRIX_PRODUCTS`; attention's fused kernels are not counted), and
    `vocab_products_s`, the products with a vocabulary-sized operand (the output projection, forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    times = {"profiled_s": 0.0, "matrix_products_s": 0.0, "vocab_products_s": 0.0}
    for event in prof.key_averages(group_by_input_shape=True):
        times["profiled_s"] += event.self_cpu_time_total / 1e6
        if event.key in MATRIX_PRODUCTS:
            times["matrix_products_s"] += event.self_cpu_time_total / 1e6
            if any(vocab_size in shape for shape in event.input_shapes if shape):
                times["vocab_products_s"] += event.self_cpu_time_total / 1e6
    return {k: round(v, 4) for k, v in times.items()}


def train_step(model, optimizer: torch.optim.Optimizer, batch: dict, autocast) -> None:
    """One optimizer step on `batch` (forward under `autocast`, backward, step, zero the gradients)."""
    with autocast:
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def count_train_step(model, optimizer, batch, autocast, device: str = "cpu") -> dict:
    """`profile_launches` of one train step (forward, backward, optimizer)."""

    return profile_launches(lambda: train_step(model, optimizer, batch, autocast), device)


def count_decode_step(model, batch, autocast, device: str = "cpu", steps: int = 10) -> dict:
    """`profile_launches` per generated token of greedy generate() with the cache (the difference between generating
    1 + steps tokens and 1 token, divided by steps: the encoder and the first step cancel out)."""

    def generate(n):
        return lambda: model.generate(**batch, max_new_tokens=n, min_new_tokens=n)

    with torch.no_grad(), autocast:
        longer, one = profile_launches(generate(1 + steps), device), profile_launches(generate(1), device)
    return {k: (longer[k] - one[k]) / steps for k in longer}


def inference_throughput(model, tokenizer, collator, samples, batch_size: int, new_tokens: int, autocast) -> float:
    """Samples per second of evaluation-style inference: `predict_batch` (encoder once, emotion, greedy response,
    associated words as text) over `samples`, `batch_size` at a time."""
    from modeling_iamm.inference import predict_batch

    def run(chunk):
        predict_batch(model, tokenizer, collator, chunk, with_associations=True, max_new_tokens=new_tokens,
                      min_new_tokens=new_tokens)

    with autocast:
        run(samples[:batch_size])  # warm-up (a compiled model compiles here), not timed
        start = time.perf_counter()
        for i in range(0, len(samples), batch_size):
            run(samples[i: i + batch_size])
    return len(samples) / (time.perf_counter() - start)


@script_main("benchmark")
def main(argv=None):
    (args,) = parse_args((BenchmarkArguments,), argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pool = ed_samples(args) if args.data else None
    words = vocabulary(args, pool)
    tokenizer = build_tokenizer([" ".join(words)])
    assert len(tokenizer) == args.vocab_size
    # compiled: bucketed padding, as train.py --torch_compile does (fewer shapes, fewer recompilations)
    collator = IAMMDataCollator(tokenizer, pad_to_multiple_of=COMPILE_PAD_MULTIPLE if args.compile else None)
    config = IAMMConfig(vocab_size=len(tokenizer), use_implicit_association=args.knowledge)
    model = IAMMForConditionalGeneration(config).to(args.device)
    # fused Adam: one kernel over all parameters (0.02 s a step here instead of 0.19 s for the foreach version)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)
    if args.compile and args.count_ops and args.device == "cpu":  # name the generated C++ kernels in the profile
        from torch._inductor import config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True
    step_model = torch.compile(model, mode=args.compile_mode) if args.compile else model
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    rng = torch.Generator().manual_seed(args.seed)

    train = "compiled_train_step" if args.compile else "train_step"  # keys of the timed steps
    results = {"parameters": sum(p.numel() for p in model.parameters()), f"{train}_s": {}, "config": vars(args)}
    step_times: List[float] = []
    model.train()
    by_context: Dict[int, List[float]] = {}
    for turns in ["ed"] if pool else args.context_turns:
        group = (draw_batches(args, pool, args.steps + 2, words, rng) if pool else
                 [synthetic_samples(args, turns, words, rng) for _ in range(args.steps + 2)])
        batches = [to_device(collator(samples), args.device) for samples in group]
        times = []
        for i, batch in enumerate(batches):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_step(step_model, optimizer, batch, autocast)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
                by_context.setdefault(int(batch["context_mask"].shape[1]), []).append(times[-1])
        results[f"{train}_s"][f"context_{turns}"] = statistics.median(times)
        step_times += times
    if args.count_ops:  # kernel launches bound a GPU step at batch 16: how many operators one step issues
        eager = count_train_step(model, optimizer, batches[-1], autocast, args.device)
        results["train_step_top_level_ops"] = eager["top_level_ops"]
        if "gpu_kernels" in eager:
            results["train_step_gpu_kernels"] = eager["gpu_kernels"]
        if args.compile:  # the same step through the compiled model (already compiled for this batch shape)
            from torch._dynamo.utils import counters

            compiled = count_train_step(step_model, optimizer, batches[-1], autocast, args.device)
            results.update({f"compiled_train_step_{k}": v for k, v in compiled.items()})
            results["compiled_graphs"] = compiled_graphs()
            results["compiled_graph_breaks"] = sum(counters["graph_break"].values())
    if args.matmul_time and args.device == "cpu":
        results[f"{train}_time_in"] = matrix_product_time(
            lambda: train_step(step_model, optimizer, batches[-1], autocast), args.vocab_size)
    if pool:
        results[f"{train}_s_by_context_turns"] = {k: statistics.median(v) for k, v in sorted(by_context.items())}
    results[f"{train}_median_s"] = statistics.median(step_times)
    results[f"{train}_mean_s"] = statistics.mean(step_times)  # compiled: includes the compilations

    model.eval()
    # synthetic: one batch per context size, generated from generation_runs + 1 times (the first not timed);
    # --data: generation_runs + 1 different random batches
    if pool:
        generation_batches = {"ed": [to_device(collator(b), args.device)
                                     for b in draw_batches(args, pool, args.generation_runs + 1, words, rng)]}
    else:
        generation_batches = {turns: [to_device(collator(synthetic_samples(args, turns, words, rng)), args.device)]
                              * (args.generation_runs + 1) for turns in args.context_turns}
    inference_samples: List[dict] = []
    while len(inference_samples) < args.inference_samples:
        inference_samples += (draw_batches(args, pool, 1, words, rng)[0] if pool
                              else synthetic_samples(args, max(args.context_turns), words, rng))
    inference_samples = inference_samples[: args.inference_samples]
    passes = [""]
    if args.compile:  # then the same through the compiled model: its encoder, and the model for the decoding steps
        passes.append("compiled_")
    for prefix in passes:
        if prefix:
            # default mode: the decoding cache grows every step, so CUDA graphs would record one graph per length
            model.get_encoder().compile(dynamic=True)
            model.compile(dynamic=True)
        key = f"{prefix}greedy_generate_{args.new_tokens}_tokens_s"
        results[key] = {}
        gen_times: List[float] = []
        for turns, batches in generation_batches.items():
            times = []
            with torch.no_grad(), autocast:
                for i, batch in enumerate(batches):
                    start = time.perf_counter()
                    out = model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    if i:
                        times.append(time.perf_counter() - start)
            assert out.shape == (args.batch_size, args.new_tokens + 1)
            results[key][f"context_{turns}"] = statistics.median(times)
            gen_times += times
        results[f"{prefix}greedy_generate_{args.new_tokens}_tokens_median_s"] = statistics.median(gen_times)
        if args.matmul_time and args.device == "cpu":  # the last generation batch, once more
            with torch.no_grad(), autocast:
                results[f"{prefix}greedy_generate_time_in"] = matrix_product_time(
                    lambda: model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens),
                    args.vocab_size)
        if args.count_ops:  # per generated token, on the last generation batch
            counts = count_decode_step(model, batch, autocast, args.device)
            results.update({f"{prefix}decode_step_{k}": v for k, v in counts.items()})
        if args.inference_samples:
            results[f"{prefix}inference_samples_per_s"] = inference_throughput(
                model, tokenizer, collator, inference_samples, args.batch_size, args.new_tokens, autocast
            )
    results["peak_memory_mb"] = peak_memory_mb(args.device)
    results["machine"] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
                          "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            if key != "config":
                print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
