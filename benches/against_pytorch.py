#!/usr/bin/env python3
"""skipgrad's training step against PyTorch's, side by side, as BENCHMARKS.md records it.

Each round runs, one after the other on the same net, PyTorch eager, PyTorch channels-last
(`pytorch_step_memory.py`) and skipgrad (`skipgrad bench`), so a change in the machine's speed
affects all three alike. It prints one markdown row per net: the median step time of each over
the rounds, skipgrad's images per second, and the medians of the per-round ratios. Needs PyTorch
(`pip install torch`) and a release build of the command (`cargo build --release -p skipgrad-cli`);
it does not run in CI:

    python3 benches/against_pytorch.py [--depths 20,56,110] [--rounds 3] [--threads 2]
        [--steps 5] [--batch 128]
"""

import argparse
import pathlib
import re
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def median_step(command, pattern):
    """Runs `command` and returns the first float that `pattern` captures in its output."""
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    output = result.stdout + result.stderr
    match = re.search(pattern, output)
    if result.returncode != 0 or match is None:
        sys.exit(f"{' '.join(command)} failed (exit {result.returncode}):\n{output}")
    return float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56,110")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    skipgrad = ROOT / "target" / "release" / "skipgrad"
    if not skipgrad.exists():
        sys.exit(f"{skipgrad} is missing: run `cargo build --release -p skipgrad-cli` first")
    common = ["--threads", str(args.threads), "--steps", str(args.steps), "--batch", str(args.batch)]
    print(
        "| model | rounds | PyTorch eager s/step | PyTorch channels-last s/step | skipgrad s/step "
        "| skipgrad images/s | skipgrad / eager | skipgrad / channels-last |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for depth in [int(d) for d in args.depths.split(",")]:
        eager, last, ours = [], [], []
        for _ in range(args.rounds):
            torch = [sys.executable, "benches/pytorch_step_memory.py", "--depth", str(depth)] + common
            eager.append(median_step(torch, r"median step ([0-9.]+) s"))
            last.append(median_step(torch + ["--channels-last"], r"median step ([0-9.]+) s"))
            bench = [str(skipgrad), "bench", "--model", f"resnet{depth}", "--warmup", "1"] + common
            ours.append(median_step(bench, r"median ([0-9.]+) s"))
        by_eager = statistics.median(s / e for s, e in zip(ours, eager))
        by_last = statistics.median(s / c for s, c in zip(ours, last))
        fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)  # noqa: E731
        images = args.batch / statistics.median(ours)
        print(
            f"| ResNet-{depth} | {args.rounds} | {fmt(eager)} | {fmt(last)} | {fmt(ours)} | {images:.0f} "
            f"| **{by_eager:.2f}** | {by_last:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
