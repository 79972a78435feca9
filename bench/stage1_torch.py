"""PyTorch CPU peer of bench/stage1.ts: the same learners' training step in the same run.

Prints one JSON line per learner: {"arch", "train_ms", "inference_ms", "threads"}, the medians of the
measured steps. A train step is what bench/stage1.ts times without its batch assembly: forward in training
mode, cross-entropy, backward and Adam (lr 1e-3, weight decay 1e-4) on a [batch, 3, crop, crop] input;
inference is the forward pass in eval mode under no_grad. Full size: torchvision's models
(inception_v3 without the aux head); tiny: the library's tiny variants, re-created in PyTorch by the
fixture scripts of tests/fixtures (the same module trees and shapes the goldens check).

    /usr/bin/python3 bench/stage1_torch.py --scale tiny|full --crop N --batch B --steps S [--inference-only] ARCH...

--inference-only (bench/peers.ts) skips the train step and prints train_ms null. --device cuda (bench/gpu_check.ts)
runs on the GPU, each timed call ending with torch.cuda.synchronize().

--memory PARTS (bench/stage1.ts --memory; one learner per process): the peak memory of a train step instead of
its time, as {"arch", "parts", "peak_bytes", "step_ms"}. The batch runs as PARTS micro-batches (PyTorch's
accumulation loop: each part's loss times its share, backward, one Adam step). Measured as the process's
resident high-water mark (VmHWM, reset through /proc/self/clear_refs before the measured step, a second step:
Adam's state exists by then) less its resident size before the model was built: the weights, gradients,
Adam's state and the step's activations, with whatever PyTorch's kernels and allocator hold on top. Run it
with MALLOC_MMAP_THRESHOLD_=65536 (bench/torch_peer.ts does), so that freed tensors leave the resident set at
once instead of staying in glibc's heap.

Threads: torch.set_num_threads(os.cpu_count()) (Debian's build defaults to one here). Run it with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (bench/stage1.ts does): they slow this OpenBLAS down.
"""
import argparse
import json
import os
import re
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))


def tiny(arch, crop):
    """The library's `scale: "tiny"` learners (src/models/*.ts *_TINY_CONFIG(S))."""
    if arch == "covidnet":
        from make_covidnet_goldens import FIXTURES, CovidNet
        return CovidNet(**{**FIXTURES["tiny"], "inputSize": crop, "wiring": "corrected"}, numClasses=4)
    if arch == "aicovid":
        from make_efficientnet_goldens import AICovid
        return AICovid(trunk=dict(widthMult=0.25, depthMult=0.25), hidden=[32, 16, 16, 8, 8], inputSize=crop)
    if arch in ("resnet152", "resnext101_32x8d", "vgg19_bn"):
        from make_resnet_vgg_goldens import FIXTURES, build
        name = {"resnet152": "resnet152_tiny", "resnext101_32x8d": "resnext101_tiny", "vgg19_bn": "vgg19_bn_tiny"}
        kind, config = FIXTURES[name[arch]]
        return build(kind, config)
    from make_densenet_inception_goldens import TINY_MIXED, DenseNet, Inception
    if arch == "densenet161":
        return DenseNet(num_classes=4, growth_rate=16, block_config=[2, 4, 6, 4], num_init_features=32, bn_size=2)
    return Inception(num_classes=4, aux_logits=False, divisor=8, mixed=TINY_MIXED, stem_stride=1, aux_kernel=1,
                     transform_input=False)


def full(arch, crop):
    if arch == "covidnet":
        from make_covidnet_goldens import FULL, CovidNet
        return CovidNet(**{**FULL, "inputSize": crop}, numClasses=4)
    if arch == "aicovid":
        from make_efficientnet_goldens import AICovid
        return AICovid(trunk=dict(widthMult=1.4, depthMult=1.8), hidden=[256, 128, 64, 32, 16], inputSize=crop)
    if arch == "inception_v3":
        return torchvision.models.inception_v3(num_classes=4, aux_logits=False, init_weights=True)
    return getattr(torchvision.models, arch)(num_classes=4)


def median_ms(fn, steps, device):
    def run():
        fn()
        if device == "cuda":
            torch.cuda.synchronize()  # a CUDA call only queues the work

    run()  # warmup: allocator, Adam's state
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def resident(key):
    """VmRSS or VmHWM of this process, in bytes."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def step_peak_bytes(model, x, y, parts):
    """The peak resident bytes of the second train step over the process's size before the model was built
    (see --memory), and that step's wall time."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def train():
        model.train()
        opt.zero_grad()
        for xi, yi in zip(x.chunk(parts), y.chunk(parts)):
            (nn.functional.cross_entropy(model(xi), yi) * (len(yi) / len(y))).backward()
        opt.step()

    train()  # Adam's state, the gradients, the allocator's first blocks
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    t = time.perf_counter()
    train()
    return resident("VmHWM"), (time.perf_counter() - t) * 1000


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scale", choices=["tiny", "full"], required=True)
    p.add_argument("--crop", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--inference-only", action="store_true")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--memory", type=int, metavar="PARTS")
    p.add_argument("archs", nargs="+")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.memory:
        [arch] = args.archs
        base = resident("VmRSS")
        model = (tiny if args.scale == "tiny" else full)(arch, args.crop)
        torch.set_num_threads(os.cpu_count())
        x = torch.randn(args.batch, 3, args.crop, args.crop)
        y = torch.arange(args.batch) % 4
        peak, ms = step_peak_bytes(model, x, y, args.memory)
        print(json.dumps({"arch": arch, "parts": args.memory, "peak_bytes": peak - base, "step_ms": ms}), flush=True)
        return
    x = torch.randn(args.batch, 3, args.crop, args.crop).to(args.device)
    y = (torch.arange(args.batch) % 4).to(args.device)
    for arch in args.archs:
        model = (tiny if args.scale == "tiny" else full)(arch, args.crop).to(args.device)
        torch.set_num_threads(os.cpu_count())  # after the fixture imports, which pin one thread for goldens
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        loss_fn = nn.CrossEntropyLoss()

        def train():
            model.train()
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        def inference():
            model.eval()
            with torch.no_grad():
                model(x)

        print(json.dumps({
            "arch": arch,
            "train_ms": None if args.inference_only else median_ms(train, args.steps, args.device),
            "inference_ms": median_ms(inference, args.steps, args.device),
            "threads": torch.get_num_threads(),
        }), flush=True)


if __name__ == "__main__":
    main()
