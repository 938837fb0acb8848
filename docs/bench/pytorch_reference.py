"""PyTorch/Captum side of the figures in docs/BACKBONES.md, measured in the same run.

Not part of the project (nothing in the workspace runs or needs Python). Install outside the
repository, e.g. `python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch torchvision
captum transformers`, then run

    TGC_BENCH_PYTHON=/tmp/torch/bin/python cargo bench -p tgc-backbones --bench explain

The bench starts this script as a server and alternates, figure by figure and repetition by
repetition, between its own timing and a request to this script, so that both sides see the
same machine (these machines are noisy, and the noise drifts). Same work on both sides: random
weights, ResNet-18 at 256² and ViT-B/16 at 224² (transformers' ViTModel, eager attention) with
batch 8 for features; batch 1 for every attribution method with a 2-class linear head.

Protocol, one request per line on stdin, one answer per line on stdout:
  `<figure>`  runs the figure once, answers its milliseconds per image
  `peak`      answers the peak resident MiB since the previous `peak`, and resets the mark
  `quit`
Run alone (`python pytorch_reference.py`) it prints every figure once.

`TGC_BENCH_DEVICE=cuda` (or `cuda:N`; what the bench passes when it runs on a GPU) puts the
models and inputs on that GPU and synchronises before each figure's clock stops.
"""

import os
import sys
import time

import torch
from torch import nn

torch.manual_seed(0)
_requested = os.environ.get("TGC_BENCH_DEVICE", "cpu")
DEVICE = torch.device(_requested if _requested.startswith("cuda") else "cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


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


def split_relus(m):
    """Each BasicBlock's second ReLU call gets a module of its own: Captum's DeepLift refuses a
    module used twice (tgc marks the two calls as two ReLUs)."""
    for layer in [m.layer1, m.layer2, m.layer3, m.layer4]:
        for block in layer:
            block.relu2 = nn.ReLU()

            def forward(self, x):
                identity = x if self.downsample is None else self.downsample(x)
                out = self.relu(self.bn1(self.conv1(x)))
                return self.relu2(self.bn2(self.conv2(out)) + identity)
            block.forward = forward.__get__(block)
    return m


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

    return Features().eval()


class Head(nn.Module):
    def __init__(self, features, dim):
        super().__init__()
        self.features = features
        self.fc = nn.Linear(dim, 2)

    def forward(self, x):
        return self.fc(self.features(x))


def figures():
    """name → (function, images per call), models built on first use."""
    from captum.attr import (DeepLift, Deconvolution, FeatureAblation, GradientShap, GuidedBackprop, GuidedGradCam,
                             IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel,
                             Occlusion, Saliency)

    out = {}
    features = resnet().to(DEVICE)
    x8 = torch.rand(8, 3, 256, 256, device=DEVICE)
    model = Head(features, 512).to(DEVICE).eval()
    x1 = torch.rand(1, 3, 256, 256, device=DEVICE)
    base = torch.zeros(1, 3, 256, 256, device=DEVICE)
    layer = features.layer4

    def no_grad(f):
        def run():
            with torch.no_grad():
                return f()
        return run

    def gradcam():
        a = LayerGradCam(model, layer).attribute(x1, target=1, relu_attributions=True)
        return LayerAttribution.interpolate(a, (256, 256), "bilinear")

    out["resnet18.forward"] = (no_grad(lambda: features(x8)), 8)
    out["resnet18.grad-cam"] = (gradcam, 1)
    out["resnet18.guided-backprop"] = (lambda: GuidedBackprop(model).attribute(x1, target=1), 1)
    out["resnet18.guided-grad-cam"] = (lambda: GuidedGradCam(model, layer).attribute(x1, target=1), 1)
    out["resnet18.saliency"] = (lambda: Saliency(model).attribute(x1, target=1, abs=True), 1)
    out["resnet18.gradient-shap"] = (
        lambda: GradientShap(model).attribute(x1, baselines=base, target=1, n_samples=5), 1)
    out["resnet18.integrated-gradients"] = (
        lambda: IntegratedGradients(model).attribute(x1, target=1, n_steps=50, internal_batch_size=25), 1)
    out["resnet18.occlusion"] = (lambda: Occlusion(model).attribute(
        x1, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), target=1, perturbations_per_eval=16), 1)
    blocks = (torch.arange(256)[:, None] // 16 * 16 + torch.arange(256)[None, :] // 16).expand(1, 3, 256, 256).to(DEVICE)
    out["resnet18.feature-ablation"] = (lambda: FeatureAblation(model).attribute(
        x1, feature_mask=blocks, target=1, perturbations_per_eval=16), 1)
    out["resnet18.saliency-smoothgrad"] = (lambda: NoiseTunnel(Saliency(model)).attribute(
        x1, nt_type="smoothgrad", nt_samples=10, stdevs=0.1, target=1, abs=True), 1)
    split = Head(split_relus(resnet()), 512).to(DEVICE).eval()
    out["resnet18.deeplift"] = (lambda: DeepLift(split).attribute(x1, baselines=base, target=1), 1)
    out["resnet18.deconvolution"] = (lambda: Deconvolution(model).attribute(x1, target=1), 1)

    vfeatures = vit().to(DEVICE)
    v8 = torch.rand(8, 3, 224, 224, device=DEVICE)
    vmodel = Head(vfeatures, 768).to(DEVICE).eval()
    v1 = torch.rand(1, 3, 224, 224, device=DEVICE)
    vbase = torch.zeros(1, 3, 224, 224, device=DEVICE)
    out["vit.forward"] = (no_grad(lambda: vfeatures(v8)), 8)
    out["vit.guided-backprop"] = (lambda: GuidedBackprop(vmodel).attribute(v1, target=1), 1)
    out["vit.gradient-shap"] = (
        lambda: GradientShap(vmodel).attribute(v1, baselines=vbase, target=1, n_samples=5), 1)
    return out


def timed(entry):
    f, per_call = entry
    sync()
    start = time.perf_counter()
    f()
    sync()
    return (time.perf_counter() - start) * 1e3 / per_call


def main():
    import warnings

    warnings.filterwarnings("ignore")
    table = figures()
    if "--serve" not in sys.argv:
        print(f"torch {torch.__version__} threads {torch.get_num_threads()}")
        for name, entry in table.items():
            timed(entry)
            print(f"{name} {timed(entry):.1f}")
        return
    capability = torch.backends.cpu.get_cpu_capability()
    on = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"ATen {capability}"
    print(f"ready torch {torch.__version__} threads {torch.get_num_threads()} {on}", flush=True)
    take_peak_rss_mib()
    for line in sys.stdin:
        request = line.strip()
        if request == "quit":
            break
        if request == "peak":
            print(f"{take_peak_rss_mib():.0f}", flush=True)
        elif request in table:
            print(f"{timed(table[request]):.3f}", flush=True)
        else:
            print(f"unknown {request}", flush=True)


if __name__ == "__main__":
    main()
