#!/usr/bin/env python3
"""skipgrad's training (or inference) step against PyTorch's, side by side, as BENCHMARKS.md records it.

Each round runs, one after the other on the same net, PyTorch eager, PyTorch channels-last
(`pytorch_step_memory.py`), with `--compiled` also `torch.compile` (channels-last), and skipgrad
(`skipgrad bench`), so a change in the machine's speed affects all of them alike. It prints one
markdown row per net: the median step time of each over the rounds, skipgrad's images per second,
and the medians of the per-round ratios. Needs PyTorch (`pip install torch`, and torchvision for
the ImageNet nets) and a release build of the command (`cargo build --release -p skipgrad-cli`);
it does not run in CI:

    python3 benches/against_pytorch.py [--models resnet20,resnet56,resnet110] [--mode train|infer]
        [--rounds 3] [--threads 2] [--steps 5] [--batch 128] [--compiled] [--avx2]

`--avx2` runs both sides as on a CPU without AVX-512 (a proxy for AMD cores before Zen 4 on a
machine that has it): PyTorch with `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`, skipgrad
with `--lanes 8 --mul-add separate`, the code it gives such an AMD CPU.

CIFAR nets (resnetD with D = 6n + 2) run on 3x32x32 images, the ImageNet nets (resnet18 to
resnet152, torchvision's definitions) on 3x224x224.
"""

import argparse
import pathlib
import re
import statistics
import os
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMAGENET = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}


def median_step(command, pattern, env=None):
    """Runs `command` (with `env` added to the environment) and returns the first float that
    `pattern` captures in its output."""
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    output = result.stdout + result.stderr
    match = re.search(pattern, output)
    if result.returncode != 0 or match is None:
        sys.exit(f"{' '.join(command)} failed (exit {result.returncode}):\n{output}")
    if env and "ATen's AVX2 kernels" not in output:
        sys.exit(f"{' '.join(command)} did not run ATen's AVX2 kernels with {env}:\n{output}")
    return float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet56,resnet110")
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--compiled", action="store_true", help="also time torch.compile (channels-last)")
    parser.add_argument("--avx2", action="store_true", help="both sides without AVX-512 (see above)")
    args = parser.parse_args()
    skipgrad = ROOT / "target" / "release" / "skipgrad"
    if not skipgrad.exists():
        sys.exit(f"{skipgrad} is missing: run `cargo build --release -p skipgrad-cli` first")
    common = ["--threads", str(args.threads), "--steps", str(args.steps), "--batch", str(args.batch)]
    common += ["--mode", args.mode]
    modes = [("eager", []), ("channels-last", ["--channels-last"])]
    if args.compiled:
        modes.append(("compiled", ["--channels-last", "--compile"]))
    torch_env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"} if args.avx2 else {}
    ours_flags = ["--lanes", "8", "--mul-add", "separate"] if args.avx2 else []
    print(
        f"| model | rounds | {' | '.join(f'PyTorch {m} s/step' for m, _ in modes)} | skipgrad s/step "
        f"| skipgrad images/s | {' | '.join(f'skipgrad / {m}' for m, _ in modes)} |"
    )
    print("|---" * (4 + 2 * len(modes)) + "|")
    for model in args.models.split(","):
        if model in IMAGENET:
            net = ["--model", model]
        elif model.startswith("resnet") and model[6:].isdigit():
            net = ["--depth", model[6:]]
        else:
            sys.exit(f"--models: {model!r} is neither a CIFAR resnetD nor one of {sorted(IMAGENET)}")
        torch_times = {m: [] for m, _ in modes}
        ours = []
        for _ in range(args.rounds):
            for m, flags in modes:
                torch = [sys.executable, "benches/pytorch_step_memory.py"] + net + common + flags
                torch_times[m].append(median_step(torch, r"median step ([0-9.]+) s", torch_env))
            bench = [str(skipgrad), "bench", "--model", model, "--warmup", "1"] + common + ours_flags
            ours.append(median_step(bench, r"median ([0-9.]+) s"))
        fmt = lambda xs: ", ".join(f"{x:.4g}" for x in xs)  # noqa: E731
        ratios = [statistics.median(s / t for s, t in zip(ours, torch_times[m])) for m, _ in modes]
        images = args.batch / statistics.median(ours)
        print(
            f"| {model} | {args.rounds} | {' | '.join(fmt(torch_times[m]) for m, _ in modes)} | {fmt(ours)} "
            f"| {images:.0f} | {' | '.join(f'**{r:.2f}**' for r in ratios)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
