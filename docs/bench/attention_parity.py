"""Attention rollout and Chefer et al. of tgc against a direct PyTorch implementation of their
definitions, on real slices, same random ViT weights (not part of the project; run with a
Python that has torch, transformers and safetensors):

    python docs/bench/features_parity.py weights                 # writes /tmp/vitdir
    python docs/bench/attention_parity.py head                   # writes /tmp/vit_head.safetensors
    for f in SLICES; do tgc explain --backbone vit --weights /tmp/vitdir --model /tmp/vit_head.safetensors \
        --input $f --target 1 --method attention-rollout,chefer [--head-fusion F --discard-ratio R] \
        --out /tmp/attcheck/$(basename $f .nii.gz).safetensors; done
    python docs/bench/attention_parity.py compare SLICES… [--head-fusion F --discard-ratio R]
"""
import sys, os, gzip, struct, numpy as np, torch
import torch.nn.functional as F
from safetensors.torch import save_file, load_file

if sys.argv[1] == 'head':
    torch.manual_seed(1)
    save_file({'weight': torch.randn(2, 768) * 0.05, 'bias': torch.randn(2) * 0.1}, '/tmp/vit_head.safetensors')
    sys.exit(0)

args = sys.argv[2:]
fusion, ratio = 'mean', 0.0
if '--head-fusion' in args:
    i = args.index('--head-fusion'); fusion = args[i + 1]; del args[i:i + 2]
if '--discard-ratio' in args:
    i = args.index('--discard-ratio'); ratio = float(args[i + 1]); del args[i:i + 2]
torch.set_num_threads(2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nifti_slice import read

from transformers import ViTModel
vit = ViTModel.from_pretrained('/tmp/vitdir', add_pooling_layer=False, attn_implementation='eager').eval()
head = load_file('/tmp/vit_head.safetensors')

def rollout(atts):
    t = atts[0].shape[-1]
    r = torch.eye(t, dtype=torch.float64)
    for a in atts:
        a = a[0].double()
        fused = {'mean': a.mean(0), 'max': a.max(0).values, 'min': a.min(0).values}[fusion]
        flat = fused.flatten().clone()
        k = int(t * t * ratio)
        if k > 0:
            _, idx = flat.topk(k, largest=False)
            idx = idx[idx != 0]
            flat[idx] = 0
        fused = flat.view(t, t)
        a = (fused + torch.eye(t, dtype=torch.float64)) / 2
        a = a / a.sum(dim=-1, keepdim=True)       # rows renormalised
        r = a @ r
    return r[0, 1:]

def chefer(atts, grads):
    t = atts[0].shape[-1]
    r = torch.eye(t, dtype=torch.float64)
    for a, g in zip(atts, grads):
        cam = (g[0].double() * a[0].double()).clamp(min=0).mean(0)
        r = r + cam @ r
    return r[0, 1:]

worst = {'attention-rollout': 0.0, 'chefer': 0.0}
for path in args:
    x = torch.from_numpy(read(path))[None, None].repeat(1, 3, 1, 1)
    x = (x * 255).trunc().clamp(0, 255) / 255
    x = F.interpolate(x, size=(224, 224), mode='bilinear', antialias=True, align_corners=False)
    out = vit(pixel_values=x, output_attentions=True)
    atts = out.attentions
    for a in atts:
        a.retain_grad()
    logits = out.last_hidden_state[:, 0] @ head['weight'].T + head['bias']
    logits[0, 1].backward()
    grads = [a.grad for a in atts]
    ours = {m: load_file(f'/tmp/attcheck/{path.split("/")[-1].replace(".nii.gz", "")}.{m}.safetensors')['layer_attribution'].double().flatten()
            for m in worst}
    theirs = {'attention-rollout': rollout(atts), 'chefer': chefer(atts, grads)}
    for m in worst:
        rel = ((ours[m] - theirs[m]).abs().max() / theirs[m].abs().max()).item()
        worst[m] = max(worst[m], rel)
for m, w in worst.items():
    print(f'{m} ({fusion}, discard {ratio}): {len(args)} real slices, max |tgc − torch| / max |torch| = {w:.2e}')
