#!/usr/bin/env python3
"""Peak resident memory and step time of PyTorch's ResNet training (or inference) step.

The comparison point for `skipgrad bench` (see BENCHMARKS.md and `benches/against_pytorch.py`).
Needs PyTorch, and torchvision for the ImageNet nets (not installed on the project's machines,
so it does not run in CI):

    python3 benches/pytorch_step_memory.py [--depth 110 | --model resnet50] [--batch 128]
        [--threads 2] [--steps 5] [--mode train|infer] [--channels-last] [--compile]

`--depth D` is the paper's CIFAR ResNet-D (6n+2 layers, option-A shortcuts, 16/32/64 channels,
3x32x32 images); `--model resnet18|34|50|101|152` is torchvision's ImageNet net on 3x224x224,
with the bottlenecks' stride on their first 1x1 convolution as in the paper (and skipgrad).
The training step is forward, cross-entropy, backward and an SGD update with momentum 0.9 and
weight decay 1e-4, as skipgrad's training driver runs it; `--mode infer` times the eval-mode
forward pass under `torch.inference_mode()`. `--channels-last` stores the model and the batch
channels-last (NHWC), PyTorch's fastest mode on CPU. It prints the median step time and the
process's peak resident memory (ru_maxrss), which includes the interpreter and PyTorch itself.
"""

import argparse
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ShortcutA(nn.Module):
    """Option A: subsample by the stride and pad the new channels with zeros."""

    def __init__(self, out_channels, stride):
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = ShortcutA(cout, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, cout in enumerate([16, 32, 64]):
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=110)
    parser.add_argument("--model", help="a torchvision ImageNet net (resnet18 ... resnet152) instead of --depth")
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--channels-last", action="store_true", help="NHWC model and batch")
    args = parser.parse_args()
    if args.model is None and (args.depth - 2) % 6 != 0:
        parser.error(f"--depth must be 6n+2, got {args.depth}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model is None:
        name, model, image, classes = f"ResNet-{args.depth}", CifarResNet(args.depth), 32, 10
    else:
        import torchvision

        name, image, classes = args.model, 224, 1000
        model = getattr(torchvision.models, args.model)(num_classes=classes)
        # torchvision's bottlenecks downsample in their 3x3 convolution ("v1.5"); the paper's,
        # and skipgrad's, in their first 1x1: move the stride back, so both time the same net.
        for layer in (model.layer2, model.layer3, model.layer4):
            block = layer[0]
            if isinstance(block, torchvision.models.resnet.Bottleneck):
                block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    if args.compile:
        model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.batch, 3, image, image).to(memory_format=layout)
    y = torch.randint(0, classes, (args.batch,))

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def infer_step():
        with torch.inference_mode():
            model(x)

    if args.mode == "infer":
        model.eval()
    step = train_step if args.mode == "train" else infer_step
    warmup = 3 if args.compile else 1  # torch.compile traces again on the first calls
    times = []
    for _ in range(args.steps + warmup):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"PyTorch {torch.__version__}, {name} {args.mode}, batch {args.batch}, {args.threads} threads"
          f"{', channels-last' if args.channels_last else ''}{', compiled' if args.compile else ''}, ATen's {torch.backends.cpu.get_cpu_capability()} kernels")
    median = statistics.median(times[warmup:])
    print(f"median step {median:.6f} s = {1000 * median:.3f} ms (first step {times[0]:.3f} s)")
    print(f"peak resident memory {peak_kb / 1000:.0f} MB")


if __name__ == "__main__":
    main()
