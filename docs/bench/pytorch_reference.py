"""PyTorch/Captum side of the figures in docs/BACKBONES.md, for comparison in the same run.

Not part of the project (nothing in the workspace runs or needs Python). Install outside the
repository, e.g. `python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch torchvision
captum transformers`, then run `TGC_BENCH_PYTHON=/tmp/torch/bin/python cargo bench -p
tgc-backbones --bench explain` (or this script alone). Same work as `cargo bench -p tgc-backbones`: random weights, ResNet-18 at 256²
batch 8 and ViT-B/16 at 224² batch 8 for features; batch 1 for every attribution method with a
2-class linear head. Prints one `name ms_per_image peak_MiB` line per figure (the best of
TGC_BENCH_ITERS runs; the peak resident memory since the previous figure).
"""

import os
import sys
import time

import torch
from torch import nn

ITERS = int(os.environ.get("TGC_BENCH_ITERS", "3"))
torch.manual_seed(0)


def per_image(fn, batch, iters=ITERS):
    """Best per-image milliseconds over `iters` timed runs after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) * 1e3 / batch)
    return best


def take_peak_rss_mib():
    """Peak resident memory since the last reset (Linux), then resets the mark."""
    with open("/proc/self/status") as f:
        kib = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return kib / 1024


def resnet():
    import torchvision

    m = torchvision.models.resnet18()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    m.fc = nn.Identity()
    return m.eval()


def vit():
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                    layer_norm_eps=1e-12, attn_implementation="eager")
    body = ViTModel(cfg, add_pooling_layer=False).eval()

    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(pixel_values=x).last_hidden_state[:, 0]

    return Features().eval(), body


class Head(nn.Module):
    def __init__(self, features, dim):
        super().__init__()
        self.features = features
        self.fc = nn.Linear(dim, 2)

    def forward(self, x):
        return self.fc(self.features(x))


def report(name, ms):
    print(f"{name} {ms:.1f} {take_peak_rss_mib():.0f}", flush=True)


def main():
    from captum.attr import (GradientShap, GuidedBackprop, GuidedGradCam, IntegratedGradients,
                             LayerAttribution, LayerGradCam, Saliency)

    print(f"torch {torch.__version__} threads {torch.get_num_threads()}", flush=True)
    which = sys.argv[1:] or ["resnet18", "vit"]
    take_peak_rss_mib()
    if "resnet18" in which:
        features = resnet()
        x = torch.rand(8, 3, 256, 256)
        with torch.no_grad():
            report("resnet18.forward", per_image(lambda: features(x), 8))
        model = Head(features, 512).eval()
        x1 = torch.rand(1, 3, 256, 256)
        layer = features.layer4

        def gradcam():
            a = LayerGradCam(model, layer).attribute(x1, target=1, relu_attributions=True)
            return LayerAttribution.interpolate(a, (256, 256), "bilinear")

        report("resnet18.grad-cam", per_image(gradcam, 1))
        report("resnet18.guided-backprop", per_image(lambda: GuidedBackprop(model).attribute(x1, target=1), 1))
        report("resnet18.guided-grad-cam", per_image(lambda: GuidedGradCam(model, layer).attribute(x1, target=1), 1))
        report("resnet18.saliency", per_image(lambda: Saliency(model).attribute(x1, target=1, abs=True), 1))
        base = torch.zeros(1, 3, 256, 256)
        report("resnet18.gradient-shap", per_image(
            lambda: GradientShap(model).attribute(x1, baselines=base, target=1, n_samples=5), 1))
        report("resnet18.integrated-gradients", per_image(
            lambda: IntegratedGradients(model).attribute(x1, target=1, n_steps=50, internal_batch_size=25), 1, (ITERS + 1) // 2))
    if "vit" in which:
        features, _ = vit()
        x = torch.rand(8, 3, 224, 224)
        with torch.no_grad():
            report("vit.forward", per_image(lambda: features(x), 8))
        model = Head(features, 768).eval()
        x1 = torch.rand(1, 3, 224, 224)
        report("vit.guided-backprop", per_image(lambda: GuidedBackprop(model).attribute(x1, target=1), 1))
        base = torch.zeros(1, 3, 224, 224)
        report("vit.gradient-shap", per_image(
            lambda: GradientShap(model).attribute(x1, baselines=base, target=1, n_samples=5), 1))


if __name__ == "__main__":
    main()
