#!/usr/bin/env python3
"""A per-kernel profile of a compiled step, summed by what each kernel computes.

Reads the profile that `SKIPGRAD_PROFILE=1` prints (stderr of `skipgrad bench`) and the graph
that `SKIPGRAD_DUMP=dir` writes (the last `NN-*.txt` stage before the memory plan), and prints
one markdown row per kind of work: convolutions by kernel size, stride and pass (forward,
backward-data, backward-weight), then batch-norm backward, elementwise, pooling and the rest,
with their milliseconds, share of the step and, for convolutions, GFLOP (a direct
convolution's operations, whatever the algorithm) and GFLOP/s. Only the last profile
in the file is read (the last timed step). Not run in CI:

    SKIPGRAD_DUMP=/tmp/d SKIPGRAD_PROFILE=1 skipgrad bench --model resnet50 --batch 16 \\
        --steps 1 --warmup 1 2> /tmp/profile.txt
    python3 benches/profile_breakdown.py /tmp/profile.txt /tmp/d
"""

import pathlib
import re
import sys
from collections import defaultdict

NODE = re.compile(r"^%(\d+): \w+\[([0-9,]*)\] = ([a-z_0-9]+)(\[.*?\])?(?:\((.*)\))?$")
ROW = re.compile(r"^(k\d+_\S+)\s+(\d+)\s+([0-9.]+)\s+[0-9.]+%\s+([0-9.]+) (GFLOP/s|GB/s)\s+(%\d+)")


def graph(dump):
    """Node id -> (dims, op text, input ids) of the last graph stage in `dump`."""
    stages = sorted(p for p in pathlib.Path(dump).glob("[0-9][0-9]-*.txt") if "memory-plan" not in p.name)
    if not stages:
        sys.exit(f"{dump}: no graph dump (run with SKIPGRAD_DUMP={dump})")
    nodes = {}
    for line in stages[-1].read_text().splitlines():
        m = NODE.match(line)
        if m:
            dims = [int(d) for d in m.group(2).split(",") if d]
            ops = m.group(3) + (m.group(4) or "")
            inputs = [int(i) for i in re.findall(r"%(\d+)", m.group(5) or "")]
            nodes[int(m.group(1))] = (dims, ops, inputs)
    return nodes


def kind(nodes, node, kernel):
    """What kernel `kernel`, computing node `node`, does, as a row label."""
    if kernel.endswith("conv2d_weights"):
        return "direct input gradients' weights rewritten"
    if kernel.endswith("_weights"):
        return "Winograd weight transforms"
    dims, op, inputs = nodes[node]
    first = re.search(r"ops=([a-z_0-9]+)", op)
    name = first.group(1) if first else op.split("[")[0]
    if name.startswith("conv2d"):
        if name == "conv2d_grad_weight":
            kh, (x, dy) = dims[2], (nodes[inputs[0]][0], nodes[inputs[1]][0])
            stride, pass_ = x[2] // dy[2], "backward-weight"
        else:
            w, x = nodes[inputs[1]][0], nodes[inputs[0]][0]
            kh = w[2]
            if name == "conv2d":
                stride, pass_ = x[2] // dims[2], "forward"
            else:
                stride, pass_ = dims[2] // x[2], "backward-data"
        return f"{kh}x{kh} convolution, stride {stride}, {pass_}"
    if "bn_backward" in op:
        return "batch-norm backward"
    if name.startswith("max_pool"):
        return "max pool" + (" backward" if name == "max_pool_grad" else "")
    if "rule=elementwise" in op or "rule=foreach" in op:
        return "elementwise (batch-norm apply, ReLU, add, updates)"
    return "other (" + name + ")"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    profile, dump = sys.argv[1:]
    blocks = pathlib.Path(profile).read_text().split("\nkernel ")
    nodes = graph(dump)
    total, rows = 0.0, defaultdict(lambda: [0.0, 0.0, 0])
    for line in blocks[-1].splitlines():
        m = ROW.match(line.strip())
        if not m:
            continue
        ms, rate, unit = float(m.group(3)), float(m.group(4)), m.group(5)
        row = rows[kind(nodes, int(m.group(6)[1:]), m.group(1))]
        row[0] += ms
        row[1] += rate * ms / 1e3 if unit == "GFLOP/s" else 0.0
        row[2] += int(m.group(2))
        total += ms
    print("| work | kernel calls | ms | share | GFLOP | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for label, (ms, gflop, calls) in sorted(rows.items(), key=lambda r: -r[1][0]):
        work, rate = (f"{gflop:.1f}", f"{gflop / (ms / 1e3):.1f}") if gflop else ("", "")
        print(f"| {label} | {calls} | {ms:.1f} | {100 * ms / total:.1f}% | {work} | {rate} |")
    print(f"| total | | {total:.1f} | | {sum(r[1] for r in rows.values()):.1f} | |")


if __name__ == "__main__":
    main()
