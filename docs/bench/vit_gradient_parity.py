"""The ViT's gradient methods of tgc (fused encoder blocks, the last block for the class token
only) against Captum and a direct PyTorch Grad-CAM on transformers' ViTModel, on real slices,
same random weights (not part of the project; run with a Python that has torch, transformers,
captum and safetensors):

    python docs/bench/features_parity.py weights                 # writes /tmp/vitdir
    python docs/bench/attention_parity.py head                   # writes /tmp/vit_head.safetensors
    for f in SLICES; do tgc explain --backbone vit --weights /tmp/vitdir --model /tmp/vit_head.safetensors \
        --input $f --target 1 --method saliency,guided-backprop,gradcam \
        --out /tmp/vitgrad/$(basename $f .nii.gz).safetensors; done
    python docs/bench/vit_gradient_parity.py SLICES…

Guided Backprop changes only ReLUs, and a GELU ViT has none: it is the plain input gradient.
Grad-CAM is at the default layer, the last block's `layernorm_before` (patch tokens as a
14 × 14 map): relu(Σ_c mean_tokens(∂y/∂A_c) · A_c).
"""
import sys, os, numpy as np, torch
import torch.nn.functional as F
from safetensors.torch import load_file
from captum.attr import Saliency

torch.set_num_threads(2)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nifti_slice import read
from transformers import ViTModel

vit = ViTModel.from_pretrained('/tmp/vitdir', add_pooling_layer=False, attn_implementation='eager').eval()
head = load_file('/tmp/vit_head.safetensors')


def logits(x):
    return vit(pixel_values=x).last_hidden_state[:, 0] @ head['weight'].T + head['bias']


worst = {'saliency': 0.0, 'guided-backprop': 0.0, 'gradcam': 0.0}
for path in sys.argv[1:]:
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
    hook = vit.encoder.layer[-1].layernorm_before.register_forward_hook(lambda m, i, o: (o.retain_grad(), store.update(a=o)))
    logits(x)[0, 1].backward()
    hook.remove()
    a, g = store['a'][0, 1:], store['a'].grad[0, 1:]          # [196, 768]
    cam = (a * g.mean(0)).sum(1).clamp(min=0).view(14, 14)
    for m in ('saliency', 'guided-backprop'):
        t = theirs[m].detach()
        worst[m] = max(worst[m], ((ours[m]['attribution'] - t).abs().max() / t.abs().max()).item())
    o = ours['gradcam']['layer_attribution']
    worst['gradcam'] = max(worst['gradcam'], ((o - cam).abs().max() / cam.abs().max()).item())
for m, w in worst.items():
    print(f'ViT {m}: {len(sys.argv) - 1} real slices, max |tgc − torch| / max |torch| = {w:.2e}')
