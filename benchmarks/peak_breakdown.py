"""Where a training run's peak memory goes, on CPU: the activations autograd keeps, by module,
and how much heap glibc holds for the blocks that are live, under each allocator setting.

    python benchmarks/peak_breakdown.py                 # DPO at the 135m shape, four settings
    python benchmarks/peak_breakdown.py --method sft    # LoRA SFT instead
    python benchmarks/peak_breakdown.py --quick         # a tiny model (a smoke test)

The model, data and spec are ``benchmarks/vs_trl.py``'s workbench side at its ``135m`` shape
(SmolLM2-135M's Llama configuration, random weights, a 49,152-word vocabulary, chat-shaped
rows; DPO: full fine-tuning, 8 pairs of up to 256 tokens per side; SFT: LoRA, 8 rows of up to
256 tokens), float32, ``kernels: auto``, padding-free, two training steps. Settings, each run
in a child process of its own:

- ``keep``: ``train.reuse_freed_memory: true`` (the default: freed blocks stay in the heap);
- ``return``: ``train.reuse_freed_memory: false`` (blocks of 1 MiB and more go back when freed);
- each with torch's transparent huge pages for its large blocks on (``+thp``,
  ``THP_MEM_ALLOC_ENABLE=1``, what a workbench process sets for itself) or off;
- ``mimalloc``, ``mimalloc-return``: the child on mimalloc (what a workbench training process
  runs on, ``workbench.running.allocator``), freed memory kept or given back, huge pages on.

``--workbench-spec JSON`` changes every setting's spec, as in ``vs_trl.py`` (say,
``'{"kernels": "torch"}'`` for the fused torch paths).

Per setting: the child's lifetime peak resident memory above its baseline (read as
``vs_trl.py`` reads it, ``child_peak_memory``), and at the end of the second step's forward
pass (where the peak is: every activation kept, the optimizer's moments made):

- ``live`` (glibc only: a mimalloc child shows ``-``): the bytes glibc's malloc has handed
  out and not had back (``mallinfo2``);
- ``held``: what it holds from the system for them, heap and mappings;
- ``free pieces``: how many free chunks the main heap's free space is cut into
  (``malloc_info``): the fragmentation that ``held - live`` measures;
- the step's wall time (forward plus backward, the second step; one step, so only a rough
  figure: ``vs_trl.py`` measures speed).

Then, for the first setting, the tensors autograd saved for the second step's backward,
by the module that saved them (a module's own operations, not its children's), counted
once per storage, the model's weights left out (they are the model, not activations).
Two wrappers note what no public hook reports: the module's ``training_step`` (the saved
tensors, the forward's end) and ``on_after_backward``; neither changes what is computed.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# name: (train.reuse_freed_memory, torch's huge pages, the malloc the child runs on)
SETTINGS = {
    "mimalloc": (True, True, "mimalloc"),
    "mimalloc-return": (False, True, "mimalloc"),
    "keep+thp": (True, True, "system"),
    "keep": (True, False, "system"),
    "return+thp": (False, True, "system"),
    "return": (False, False, "system"),
}
DEFAULT_SETTINGS = ("mimalloc", "keep+thp", "keep", "return")


# ---------------------------------------------------------------------------------------
# the child: one run, its allocator read at the second step


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


def heap_reading(libc) -> dict:
    """glibc's view now: live and held MiB, and the main heap's free chunks."""
    info = libc.mallinfo2()
    with tempfile.NamedTemporaryFile("w+b", suffix=".xml") as out:
        stream = libc.fopen(out.name.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        text = Path(out.name).read_text()
    # The main heap's <heap nr="0"> block: its <total type="rest" count=.../> is its free
    # chunks outside the fast bins.
    main = text.split('<heap nr="0">', 1)[1].split("</heap>", 1)[0]
    rest = main.split('<total type="rest" count="', 1)[1]
    return {
        "live_mb": (info.uordblks + info.hblkhd) / 2**20,
        "held_mb": (info.arena + info.hblkhd) / 2**20,
        "free_pieces": int(rest.split('"', 1)[0]),
    }


def glibc():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    return libc


class SavedTensors:
    """Bytes autograd saves for backward, by the module whose own code saved them."""

    def __init__(self, skip: set[int]):
        self.skip = skip  # storages not to count (the model's weights)
        self.modules: list[str] = []
        self.seen: dict[int, tuple[str, int]] = {}

    def enter(self, module, args) -> None:
        self.modules.append(type(module).__name__)

    def leave(self, module, args, output) -> None:
        self.modules.pop()

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.skip and key not in self.seen:
            self.seen[key] = (self.modules[-1] if self.modules else "(outside modules)",
                              storage.nbytes())  # fmt: skip
        return tensor

    def by_module(self) -> dict[str, float]:
        totals: collections.Counter = collections.Counter()
        for module, nbytes in self.seen.values():
            totals[module] += nbytes / 2**20
        return dict(totals.most_common())


def child(job: dict) -> dict:
    import torch
    from torch.nn.modules import module as nn_module
    from workbench_child import run_spec

    from workbench.methods.base import WorkbenchModule

    torch.set_num_threads(job["threads"])
    spec_of = __import__(f"vs_trl_{job['method']}").spec
    libc = glibc()
    seen: dict = {}
    counting = {"step": 0, "started": 0.0}
    training_step = WorkbenchModule.training_step
    after_backward = WorkbenchModule.on_after_backward

    def wrapped_step(self, batch, batch_idx):
        counting["step"] += 1
        counting["started"] = time.perf_counter()
        if counting["step"] != 2:
            return training_step(self, batch, batch_idx)
        weights = {p.untyped_storage().data_ptr() for p in self.parameters()}
        saved = SavedTensors(weights)
        hooks = (nn_module.register_module_forward_pre_hook(saved.enter),
                 nn_module.register_module_forward_hook(saved.leave))  # fmt: skip
        try:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                out = training_step(self, batch, batch_idx)
        finally:
            for hook in hooks:
                hook.remove()
        seen["at_peak"] = heap_reading(libc)
        seen["saved_mb"] = saved.by_module()
        return out

    def wrapped_after_backward(self):
        if counting["step"] == 2:
            seen["step_s"] = time.perf_counter() - counting["started"]
        return after_backward(self)

    WorkbenchModule.training_step = wrapped_step
    WorkbenchModule.on_after_backward = wrapped_after_backward

    baseline_mb, kernels = run_spec(lambda store: spec_of(job, store), _observer())
    return {**seen, "baseline_mb": baseline_mb, "kernels": kernels}


def _observer():
    from workbench.running.events import RunObserver

    return RunObserver()


# ---------------------------------------------------------------------------------------
# the parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("dpo", "sft"), default="dpo")
    parser.add_argument("--workbench-spec", type=json.loads, default={},
                        help="JSON merged into the spec, section by section")  # fmt: skip
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                        help=f"comma-separated, of {', '.join(SETTINGS)}")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="a tiny model (a smoke test)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    settings = args.settings.split(",")
    wrong = [s for s in settings if s not in SETTINGS]
    if wrong:
        parser.error(f"--settings {','.join(wrong)}: allowed {', '.join(SETTINGS)}")

    import vs_trl
    from child_peak_memory import run_child_process
    from machine_load import load_average

    print(f"Peak memory by part, {args.method.upper()}, CPU")
    print(f"command: python benchmarks/peak_breakdown.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"load average at start: {load_average()}")
    shape = "135m-quick" if args.quick else "135m"
    sizes = {m: dict(v) for m, v in vs_trl.SIZES[shape].items() if m == args.method}
    sizes[args.method].update(steps=1, warmup=1)
    with tempfile.TemporaryDirectory(prefix="peak-breakdown-") as tmp:
        job = {
            "shape": "135m", "sizes": sizes, "folder": tmp, "threads": args.threads,
            "beta": vs_trl.BETA, "model": str(Path(tmp) / "model"),
            "model_shape": vs_trl.QUICK_WORD_MODEL if args.quick else vs_trl.SMOLLM2_135M,
            "padding_free": True, "reward": "even_words", "huge_pages": False,
            "workbench_spec": {},
        }  # fmt: skip
        built = vs_trl.run_child("build", job)
        held_out = vs_trl.HELD_OUT
        data = {"sft": "sft.jsonl", "dpo": "pairs.jsonl"}[args.method]
        run_job = {**job, **{k: v for k, v in sizes[args.method].items() if k != "repeats"},
                   "method": args.method, "precision": "fp32", "lr": vs_trl.LR[args.method],
                   "eval_fraction": held_out / built[args.method]["rows"],
                   "data": str(Path(tmp) / data)}  # fmt: skip
        print(f"{built['params'] / 1e6:.1f}M parameters, vocabulary {built['vocab']}; "
              f"1 + 1 steps; {args.threads} threads")  # fmt: skip
        results = {}
        for name in settings:
            reuse, huge_pages, malloc = SETTINGS[name]
            spec = {
                **args.workbench_spec,
                "train": {**args.workbench_spec.get("train", {}), "reuse_freed_memory": reuse},
            }
            one = {**run_job, "huge_pages": huge_pages, "allocator": malloc,
                   "workbench_spec": spec}  # fmt: skip
            command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(one)]
            run = run_child_process(command, vs_trl.child_environment(one))
            if run.returncode != 0:
                raise RuntimeError(f"setting {name} failed:\n{run.stderr[-4000:]}")
            result = json.loads(run.stdout.strip().splitlines()[-1])
            result["peak_mb"] = run.peak_rss_mb - result["baseline_mb"]
            results[name] = result
            print(f"  {name}: peak {result['peak_mb']:.0f} MiB", file=sys.stderr, flush=True)

    header = (f"{'setting':<15} {'peak MiB':>9} {'live MiB':>9} {'held MiB':>9} "
              f"{'held-live':>9} {'free pieces':>11} {'step s':>7}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        at = r["at_peak"]
        if SETTINGS[name][2] == "system":
            live, held = f"{at['live_mb']:>9.0f}", f"{at['held_mb']:>9.0f}"
            waste, pieces = f"{at['held_mb'] - at['live_mb']:>9.0f}", f"{at['free_pieces']:>11}"
        else:  # glibc's counters say nothing of mimalloc's heap
            live, held, waste, pieces = f"{'-':>9}", f"{'-':>9}", f"{'-':>9}", f"{'-':>11}"
        print(f"{name:<15} {r['peak_mb']:>9.0f} {live} {held} {waste} {pieces} "
              f"{r['step_s']:>7.2f}")  # fmt: skip
    first = results[settings[0]]
    print(f"\nkernels: {first['kernels']}")
    total = sum(first["saved_mb"].values())
    print(f"saved for backward at the second step ({settings[0]}): {total:.1f} MiB, by module")
    for module, mb in first["saved_mb"].items():
        print(f"  {module:<28} {mb:>8.1f} MiB  {100 * mb / total:>5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
