"""The engine against llama.cpp itself, and against the memory-bandwidth bound.

Three questions, one run, the variants interleaved round by round:

1. How much does Python cost? llama.cpp's own ``llama-bench`` (C++, built from
   the llama.cpp source that llama-cpp-python vendors, with the same safe
   flags as our wheel: ``deploy/llama_cmake_args.sh``) against, in this
   process, on the same GGUF and thread count:
   * ``llama_decode`` called through llama-cpp-python's ctypes binding, one
     token per call (what llama-bench's tg test does, minus C++);
   * ``Llama.eval`` one token at a time (the binding's Python wrapper: batch
     bookkeeping and a copy of the logits row);
   * the ``Llama.generate`` token loop, greedy (what the engine runs).
2. How far is decoding from the limit? Every generated token reads every
   weight once (the tied embedding matrix is the output head), so
   ``tok/s <= bandwidth / model bytes``. Bandwidth is measured here, as
   numpy reading a 512 MiB array with one thread per decode thread.
3. Prompt processing, for scale: llama-bench ``pp`` against ``Llama.eval`` of
   the same number of tokens in one batch.

The llama-bench binary is cached under
``$XDG_CACHE_HOME/hybrid-gateway/llama-bench/<version+flags>/``; the first run
downloads llama-cpp-python's sdist from PyPI and compiles it (several minutes).

Usage: python bench/llama_bench.py [--rounds 5] [--tokens 128] [--prompt 64] [--threads N]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.metadata
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local_model.model_path import resolve_model_path  # noqa: E402


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hybrid-gateway"


def cmake_flags() -> list[str]:
    out = subprocess.run(
        ["sh", str(ROOT / "deploy" / "llama_cmake_args.sh")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


def quiet(argv: list[str]) -> None:
    """Run a build step; its (very chatty) output is shown only if it fails."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).splitlines()[-30:]
        raise RuntimeError(f"{argv[0]} failed:\n" + "\n".join(tail))


def build_llama_bench(version: str, flags: list[str]) -> Path:
    """llama-bench from the sdist of the installed llama-cpp-python, cached by version+flags."""
    key = hashlib.sha256(f"{version}|{' '.join(flags)}".encode()).hexdigest()[:16]
    target = cache_root() / "llama-bench" / key / "llama-bench"
    if target.exists():
        return target
    sdist_dir = cache_root() / "sdist"
    sdist = sdist_dir / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        print(f"downloading the llama-cpp-python {version} sdist ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                str(sdist_dir),
            ],
            check=True,
        )
    print(f"building llama-bench (several minutes) with: {' '.join(flags)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
            archive.extractall(tmp, members=members, filter="data")
        source = Path(tmp) / prefix
        build = Path(tmp) / "build"
        quiet(
            [
                "cmake",
                "-S",
                str(source),
                "-B",
                str(build),
                "-DCMAKE_BUILD_TYPE=Release",
                "-DBUILD_SHARED_LIBS=OFF",
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_SERVER=OFF",
                *flags,
            ],
        )
        quiet(
            ["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(os.cpu_count())]
        )
        built = build / "bin" / "llama-bench"  # llama.cpp puts every executable in bin/
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target)
    return target


def run_llama_bench(binary: Path, model: Path, threads: int, args: list[str]) -> float:
    """One llama-bench repetition; its tokens per second."""
    out = subprocess.run(
        [str(binary), "-m", str(model), "-t", str(threads), "-fa", "off", "-r", "1", "-o", "json"]
        + args,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    results = json.loads(out)
    return float(results[0]["avg_ts"])


def measure_bandwidth(threads: int, mib: int = 512, repeats: int = 5) -> float:
    """Bytes per second numpy reads from a buffer far larger than the caches."""
    data = np.ones(mib * 1024 * 1024 // 8)
    parts = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))  # ufunc reductions release the GIL
            best = min(best, time.perf_counter() - start)
    return data.nbytes / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per run")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens for the pp test")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import llama_cpp

    version = importlib.metadata.version("llama-cpp-python")
    flags = cmake_flags()
    binary = build_llama_bench(version, flags)
    model = resolve_model_path(None)
    threads = args.threads
    llm = llama_cpp.Llama(
        str(model),
        n_ctx=args.prompt + args.tokens + 16,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=512,
        verbose=False,
    )
    n_vocab = llm.n_vocab()
    bos = llm.token_bos()
    rng = random.Random(0)
    model_bytes = int(llama_cpp.llama_model_size(llm.model))

    def raw_decode() -> float:
        """tg as llama-bench runs it, through ctypes: one llama_decode per token."""
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        token = (ctypes.c_int32 * 1)(bos)
        start = time.perf_counter()
        for _ in range(args.tokens):
            batch = llama_cpp.llama_batch_get_one(token, 1)
            if llama_cpp.llama_decode(llm.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            llama_cpp.llama_synchronize(llm.ctx)
            token[0] = rng.randrange(n_vocab)
        return args.tokens / (time.perf_counter() - start)

    def wrapper_eval() -> float:
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        token = bos
        start = time.perf_counter()
        for _ in range(args.tokens):
            llm.eval([token])
            token = rng.randrange(n_vocab)
        return args.tokens / (time.perf_counter() - start)

    def generate_loop() -> float:
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        count = 0
        start = time.perf_counter()
        for _ in llm.generate([bos], temp=0.0, reset=True):
            count += 1
            if count == args.tokens:
                break
        return count / (time.perf_counter() - start)

    def prompt_eval() -> float:
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        tokens = [bos] + [rng.randrange(n_vocab) for _ in range(args.prompt - 1)]
        start = time.perf_counter()
        llm.eval(tokens)
        return args.prompt / (time.perf_counter() - start)

    variants: dict[str, Callable[[], float]] = {
        "llama-bench tg (C++)": lambda: run_llama_bench(
            binary, model, threads, ["-p", "0", "-n", str(args.tokens)]
        ),
        "llama_decode via ctypes": raw_decode,
        "Llama.eval, 1 token/call": wrapper_eval,
        "Llama.generate greedy loop": generate_loop,
    }
    pp_variants: dict[str, Callable[[], float]] = {
        "llama-bench pp (C++)": lambda: run_llama_bench(
            binary, model, threads, ["-p", str(args.prompt), "-n", "0"]
        ),
        "Llama.eval, one batch": prompt_eval,
    }
    for fn in (*variants.values(), *pp_variants.values()):
        fn()  # warm-up: page in the weights, size the buffers
    results: dict[str, list[float]] = {name: [] for name in (*variants, *pp_variants)}
    for round_ in range(args.rounds):
        for group in (variants, pp_variants):
            names = list(group)
            names = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in names:
                results[name].append(group[name]())

    bandwidth = measure_bandwidth(threads)
    bound = bandwidth / model_bytes

    def row(name: str, base: str) -> str:
        values = results[name]
        ratios = [v / b for v, b in zip(values, results[base], strict=True)]
        return (
            f"| {name} | {statistics.median(values):.1f} | "
            f"{min(values):.1f}-{max(values):.1f} | "
            f"{statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}] |"
        )

    print(
        f"model: {model.name}, {model_bytes / 2**20:.1f} MiB of weights; threads {threads}; "
        f"{args.rounds} rounds, order rotated; llama-cpp-python {version}"
    )
    print(f"build flags: {' '.join(flags)}")
    print()
    print(f"| Decode, {args.tokens} tokens | tok/s median | range | ratio to llama-bench |")
    print("|---|---|---|---|")
    for name in variants:
        print(row(name, "llama-bench tg (C++)"))
    print()
    print(f"| Prompt, {args.prompt} tokens | tok/s median | range | ratio to llama-bench |")
    print("|---|---|---|---|")
    for name in pp_variants:
        print(row(name, "llama-bench pp (C++)"))
    print()
    best = statistics.median(results["llama-bench tg (C++)"])
    ours = statistics.median(results["Llama.generate greedy loop"])
    print(
        f"memory read bandwidth ({threads} threads, numpy, 512 MiB): {bandwidth / 1e9:.1f} GB/s; "
        f"bound = bandwidth / weight bytes = {bound:.0f} tok/s; "
        f"llama-bench reaches {best / bound:.2f} of it, the generate loop {ours / bound:.2f}"
    )


if __name__ == "__main__":
    main()
