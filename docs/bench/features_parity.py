"""Features of tgc against PyTorch on the real slices, same random weights (not part of the
project; run with a Python that has torch, torchvision, transformers and safetensors):

    python docs/bench/features_parity.py weights        # writes /tmp/r18.safetensors, /tmp/vitdir
    tgc extract --backbone resnet18 --weights /tmp/r18.safetensors --data DIR --out /tmp/feat_r18.safetensors --no-cache
    tgc extract --backbone vit --weights /tmp/vitdir --data DIR --out /tmp/feat_vit.safetensors --no-cache
    python docs/bench/features_parity.py compare DIR    # max |tgc − torch| / max |torch| per backbone

The ViT is saved in the hub checkpoints' key layout (transformers 5 renames the modules in
memory, not in the files on the hub).
"""
import sys
if sys.argv[1] == "weights":
    import gzip, struct, sys, glob, numpy as np, torch, torchvision
    from safetensors.torch import save_file, load_file
    torch.manual_seed(0)
    m = torchvision.models.resnet18()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1); mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5); mod.bias.data.uniform_(-0.1, 0.1)
    m.eval()
    sd = {k: v.contiguous() for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(sd, "/tmp/r18.safetensors")
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu", layer_norm_eps=1e-12, attn_implementation="eager")
    vit = ViTModel(cfg, add_pooling_layer=False).eval()
    import os; os.makedirs("/tmp/vitdir", exist_ok=True)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, "/tmp/vitdir/model.safetensors")
    cfg.to_json_file("/tmp/vitdir/config.json")
    import re
    from safetensors.torch import load_file
    sd = load_file('/tmp/vitdir/model.safetensors')
    out = {}
    names = {'attention.q_proj': 'attention.attention.query', 'attention.k_proj': 'attention.attention.key', 'attention.v_proj': 'attention.attention.value',
             'attention.o_proj': 'attention.output.dense', 'mlp.fc1': 'intermediate.dense', 'mlp.fc2': 'output.dense'}
    for k, v in sd.items():
        m = re.match(r'layers\.(\d+)\.(.*)\.(weight|bias)$', k)
        if m:
            k = f'encoder.layer.{m.group(1)}.{names.get(m.group(2), m.group(2))}.{m.group(3)}'
        out[k] = v.contiguous()
    save_file(out, '/tmp/vitdir/model.safetensors')
    sys.exit(0)
import gzip, struct, glob, os, re, numpy as np, torch, torchvision
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
torch.set_num_threads(2)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nifti_slice import read
files = sorted(glob.glob(sys.argv[2] + '/*/*.nii*'))
def key(p):
    m = re.search(r'OAS3(\d+)_MR_d(\d+)', p); return (30000 + int(m.group(1)) if len(m.group(1)) == 4 else int('3' + m.group(1)), int(m.group(2)))
r18 = torchvision.models.resnet18(); r18.fc = torch.nn.Identity()
sd = load_file('/tmp/r18.safetensors'); r18.load_state_dict({k: v for k, v in sd.items() if not k.startswith('fc.')}, strict=False); r18.eval()
from transformers import ViTConfig, ViTModel
vit = ViTModel.from_pretrained('/tmp/vitdir', add_pooling_layer=False, attn_implementation='eager').eval()
for name, model, prep in [('resnet18', r18, None), ('vit', vit, 224)]:
    f = safe_open(f'/tmp/feat_{name if name != "resnet18" else "r18"}.safetensors', 'pt')
    feats, pid, day = f.get_tensor('features'), f.get_tensor('patient_id'), f.get_tensor('day')
    worst = 0.0; n = 0
    for i in range(0, 100, 9):
        p = int(pid[i]); d = int(day[i])
        path = [q for q in files if f'OAS{p}_MR_d{d:04d}' in q][0]
        x = torch.from_numpy(read(path))[None, None].repeat(1, 3, 1, 1)
        with torch.no_grad():
            if prep:
                x = (x * 255).trunc().clamp(0, 255) / 255
                x = F.interpolate(x, size=(224, 224), mode='bilinear', antialias=True, align_corners=False)
                y = model(pixel_values=x).last_hidden_state[:, 0][0]
            else:
                y = model(x)[0]
        rel = ((feats[i] - y).abs().max() / y.abs().max()).item()
        worst = max(worst, rel); n += 1
    print(f'{name}: {n} real slices, max |tgc − torch| / max |torch| = {worst:.2e}')
