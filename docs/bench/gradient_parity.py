"""The gradient methods of tgc against Captum (and, for the ViT's Grad-CAM, a direct PyTorch
Grad-CAM) on real slices, same random weights (not part of the project; run with a Python that
has torch, torchvision, transformers, captum and safetensors):

    python docs/bench/features_parity.py weights                 # /tmp/r18.safetensors, /tmp/vitdir
    python docs/bench/cam_parity.py head                         # /tmp/r18_head.safetensors
    python docs/bench/attention_parity.py head                   # /tmp/vit_head.safetensors
    for f in SLICES; do s=$(basename $f .nii.gz)
      tgc explain --backbone resnet18 --weights /tmp/r18.safetensors --model /tmp/r18_head.safetensors \
        --input $f --target 1 --method saliency,guided-backprop --out /tmp/r18grad/$s.safetensors
      tgc explain --backbone vit --weights /tmp/vitdir --model /tmp/vit_head.safetensors \
        --input $f --target 1 --method saliency,guided-backprop,gradcam --out /tmp/vitgrad/$s.safetensors; done
    python docs/bench/gradient_parity.py SLICES…

ResNet-18 (torchvision): Saliency and Guided Backprop, the input gradients through the banded
stem, the max-pool and the Winograd layers. ViT (transformers' ViTModel; fused encoder blocks,
the last block for the class token only): Guided Backprop changes only ReLUs, and a GELU ViT
has none, so it is the plain input gradient; Grad-CAM is at the default layer, the last block's
`layernorm_before` (patch tokens as a 14 × 14 map): Σ_c mean_tokens(∂y/∂A_c) · A_c, compared
before the ReLU (the layer attribution, as Captum's LayerGradCam).
"""
import sys, os, numpy as np, torch
import torch.nn.functional as F
from safetensors.torch import load_file
from captum.attr import Saliency, GuidedBackprop

torch.set_num_threads(2)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nifti_slice import read
from transformers import ViTModel

import torchvision
r18 = torchvision.models.resnet18()
sd = load_file('/tmp/r18.safetensors')
r18.load_state_dict({k: v for k, v in sd.items() if not k.startswith('fc.')}, strict=False)
r18_head = load_file('/tmp/r18_head.safetensors')
r18.fc = torch.nn.Linear(512, 2)
r18.fc.weight.data, r18.fc.bias.data = r18_head['weight'], r18_head['bias']
r18.eval()
vit = ViTModel.from_pretrained('/tmp/vitdir', add_pooling_layer=False, attn_implementation='eager').eval()
head = load_file('/tmp/vit_head.safetensors')


def logits(x):
    return vit(pixel_values=x).last_hidden_state[:, 0] @ head['weight'].T + head['bias']


worst = {'saliency': 0.0, 'guided-backprop': 0.0, 'gradcam': 0.0}
r18_worst = {'saliency': 0.0, 'guided-backprop': 0.0}
for path in sys.argv[1:]:
    x = torch.from_numpy(read(path))[None, None].repeat(1, 3, 1, 1)
    stem = path.split('/')[-1].replace('.nii.gz', '')
    theirs = {'saliency': Saliency(r18).attribute(x, target=1, abs=True), 'guided-backprop': GuidedBackprop(r18).attribute(x, target=1)}
    for m, t in theirs.items():
        o = load_file(f'/tmp/r18grad/{stem}.{m}.safetensors')['attribution']
        r18_worst[m] = max(r18_worst[m], ((o - t[0]).abs().max() / t.abs().max()).item())
    x = torch.from_numpy(read(path))[None, None].repeat(1, 3, 1, 1)
    x = (x * 255).trunc().clamp(0, 255) / 255
    x = F.interpolate(x, size=(224, 224), mode='bilinear', antialias=True, align_corners=False)
    stem = path.split('/')[-1].replace('.nii.gz', '')
    ours = {m: load_file(f'/tmp/vitgrad/{stem}.{m}.safetensors') for m in worst}
    theirs = {'saliency': Saliency(logits).attribute(x, target=1, abs=True)[0]}
    xg = x.clone().requires_grad_(True)
    logits(xg)[0, 1].backward()
    theirs['guided-backprop'] = xg.grad[0]
    store = {}

    def keep(module, inputs, output):
        output.retain_grad()
        store['a'] = output

    hook = vit.layers[-1].layernorm_before.register_forward_hook(keep)
    logits(x)[0, 1].backward()
    hook.remove()
    a, g = store['a'][0, 1:], store['a'].grad[0, 1:]          # [196, 768]
    cam = (a * g.mean(0)).sum(1).view(14, 14)              # before the ReLU, as Captum's LayerGradCam
    for m in ('saliency', 'guided-backprop'):
        t = theirs[m].detach()
        worst[m] = max(worst[m], ((ours[m]['attribution'] - t).abs().max() / t.abs().max()).item())
    o = ours['gradcam']['layer_attribution']
    worst['gradcam'] = max(worst['gradcam'], ((o - cam).abs().max() / cam.abs().max()).item())
for m, w in r18_worst.items():
    print(f'ResNet-18 {m}: {len(sys.argv) - 1} real slices, max |tgc − torch| / max |torch| = {w:.2e}')
for m, w in worst.items():
    print(f'ViT {m}: {len(sys.argv) - 1} real slices, max |tgc − torch| / max |torch| = {w:.2e}')
