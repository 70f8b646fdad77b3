#!/usr/bin/env python3
"""The README's training recipe in PyTorch: a CIFAR ResNet on Fashion-MNIST, as `skipgrad train` runs it.

For comparing skipgrad's training curves with PyTorch's on the same recipe (the degradation
experiment's open questions, BENCHMARKS.md). Needs PyTorch and numpy (`pip install torch`) and
Debian's dataset-fashion-mnist; it does not run in CI:

    python3 benches/pytorch_train_fashion.py [--depth 20] [--plain] [--epochs 1] [--seed 0]
        [--iterations N] [--threads 2] [--warmup] [--out metrics.jsonl]

The recipe is skipgrad's: the CIFAR ResNet of `pytorch_step_memory.py` (option-A shortcuts) with
one input channel, convolutions He-initialised (normal, fan-out), batch-norm weights 1 and biases
0; pixels scaled by 1/255 minus the training split's per-pixel mean; pad 4, random 28x28 crop,
random horizontal flip; batches of 128 (the last partial batch dropped); SGD with momentum 0.9
and weight decay 1e-4 at lr 0.1, divided by 10 at 50% and 75% of the iterations; with --warmup,
lr 0.01 until the training error of a batch falls below 80%. It writes one JSON line per
iteration (iteration, loss, train_error, lr) to --out and prints the test accuracy.
"""

import argparse
import gzip
import json
import pathlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pytorch_step_memory import BasicBlock, CifarResNet

DATA = pathlib.Path("/usr/share/datasets/fashion-mnist")


def idx(name):
    """An IDX file of Debian's dataset-fashion-mnist as a numpy array."""
    with gzip.open(DATA / name) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class PlainBlock(BasicBlock):
    """A basic block without its shortcut: the paper's plain net."""

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--plain", action="store_true", help="no shortcuts")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--iterations", type=int, help="instead of --epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", action="store_true", help="lr 0.01 until the training error is below 80%%")
    parser.add_argument("--out", default="metrics.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    train_x = idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    train_y = idx("train-labels-idx1-ubyte.gz").astype(np.int64)
    test_x = idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    test_y = idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    mean = train_x.mean(axis=0)
    train_x, test_x = train_x - mean, test_x - mean

    if args.plain:
        import pytorch_step_memory

        pytorch_step_memory.BasicBlock = PlainBlock
    model = CifarResNet(args.depth)
    model.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    batch, per_epoch = 128, len(train_x) // 128
    iterations = args.iterations or per_epoch * args.epochs
    warmed_up = not args.warmup
    with open(args.out, "w") as out:
        for i in range(iterations):
            if i % per_epoch == 0:
                order = rng.permutation(len(train_x))
            take = order[(i % per_epoch) * batch : (i % per_epoch + 1) * batch]
            padded = np.pad(train_x[take], ((0, 0), (4, 4), (4, 4)))
            dy, dx = rng.integers(0, 9, size=2 * batch).reshape(2, batch)
            crops = np.stack([padded[k, dy[k] : dy[k] + 28, dx[k] : dx[k] + 28] for k in range(batch)])
            flip = rng.random(batch) < 0.5
            crops[flip] = crops[flip, :, ::-1]
            x = torch.from_numpy(np.ascontiguousarray(crops)).unsqueeze(1)
            y = torch.from_numpy(train_y[take])
            lr = 0.1 * (0.1 ** sum(i >= f * iterations for f in (0.5, 0.75)))
            if not warmed_up:
                lr = 0.01
            for group in opt.param_groups:
                group["lr"] = lr
            model.train()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            error = (logits.argmax(1) != y).float().mean().item()
            warmed_up = warmed_up or error < 0.8
            out.write(json.dumps({"iteration": i + 1, "loss": loss.item(), "train_error": error, "lr": lr}) + "\n")
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(torch.from_numpy(test_x[k : k + 500]).unsqueeze(1)).argmax(1) == torch.from_numpy(test_y[k : k + 500]))
            .sum()
            .item()
            for k in range(0, len(test_x), 500)
        )
    kind = "plain" if args.plain else "ResNet"
    print(f"PyTorch {torch.__version__}, {kind}-{args.depth}, {iterations} iterations: test accuracy {correct / len(test_x):.2%}")


if __name__ == "__main__":
    main()
