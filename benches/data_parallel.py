#!/usr/bin/env python3
"""Data-parallel training on one machine, side by side: 2 MPI ranks of 1 thread each against 1
process of 2 threads, as BENCHMARKS.md records it.

Each round runs `skipgrad train` both ways, one after the other, on the same net and global
batch (Fashion-MNIST, the README's main job's data), so a change in the machine's speed affects
both alike. It prints one markdown row per way: the median step time over the steps of every
round after the first 5 of each run (compiling), images per second, the summing of gradients'
(MPI all-reduce's) share of a step, and the peak resident memory of each process and of all of
them. Needs Open MPI (`apt-get install openmpi-bin libopenmpi-dev clang libclang1-14`) and the
command built with MPI (`cargo build --release -p skipgrad-cli --features mpi`); it does not run
in CI:

    python3 benches/data_parallel.py [--model resnet20] [--batch 128] [--iterations 60] [--rounds 3]
"""

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = ROOT / "target/release/skipgrad"
# What mpirun needs in a container: root allowed, shared memory without a kernel module.
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


def run(command, out):
    """Runs `command` (which trains into `out`): per-step seconds, per-step all-reduce seconds
    (after the first 5 steps) and the peak RSS in MB of each process."""
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **MPI_ENV})
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if "loss" in l]
    delta = lambda key: [b.get(key, 0) - a.get(key, 0) for a, b in zip(steps[5:], steps[6:])]
    rss = [int(m) / 1024 for m in re.findall(r"maxrss (\d+)", result.stderr)]
    return delta("seconds"), delta("communication_seconds"), rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    timed = ["/usr/bin/time", "-f", "maxrss %M", str(BINARY)]
    train = ["train", "--model", args.model, "--batch", str(args.batch), "--iterations", str(args.iterations)]
    ways = {
        "1 process x 2 threads": lambda out: timed + train + ["--threads", "2", "--out", str(out)],
        "2 ranks x 1 thread": lambda out: ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2"]
        + timed
        + train
        + ["--distributed", "--threads", "1", "--out", str(out)],
    }
    results = {way: ([], [], []) for way in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for way, command in ways.items():
                out = pathlib.Path(tmp) / f"{r}-{way.replace(' ', '')}"
                steps, summing, rss = run(command(out), out)
                results[way][0].extend(steps)
                results[way][1].extend(summing)
                results[way][2].append(rss)
    print(f"{args.model}, batch {args.batch}, {args.iterations} iterations x {args.rounds} rounds")
    print("| way | median step (ms) | images/s | all-reduce share | peak RSS per process (MB) | in all (MB) |")
    print("|---|---|---|---|---|---|")
    base = None
    for way, (steps, summing, rss) in results.items():
        step = statistics.median(steps)
        base = base or step
        share = statistics.median(summing) / step if any(summing) else 0.0
        per = statistics.median(max(r) for r in rss)
        total = statistics.median(sum(r) for r in rss)
        print(
            f"| {way} | {1000 * step:.1f} ({step / base:.2f}x) | {args.batch / step:.0f} | {100 * share:.1f}% "
            f"| {per:.0f} | {total:.0f} |"
        )


if __name__ == "__main__":
    main()
