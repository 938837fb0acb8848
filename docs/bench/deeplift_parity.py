"""DeepLift, DeepLiftShap and Deconvolution of tgc against Captum on real slices, same random
ResNet-18 weights (not part of the project; run with a Python that has torch, torchvision,
captum and safetensors). torchvision's BasicBlock calls one ReLU module twice, which Captum's
DeepLift refuses; here each block gets a second ReLU module, as tgc marks two ReLUs:

    python docs/bench/deeplift_parity.py weights          # /tmp/r18.safetensors, /tmp/r18_head.safetensors, /tmp/dls_baselines.safetensors
    for f in SLICES; do for t in 0 1; do s=$(basename $f .nii.gz)
      tgc explain --backbone resnet18 --weights /tmp/r18.safetensors --model /tmp/r18_head.safetensors \
        --input $f --target $t --method deeplift,deconvolution --baselines zeros --out /tmp/dlcheck/$s.t$t.safetensors
      tgc explain --backbone resnet18 --weights /tmp/r18.safetensors --model /tmp/r18_head.safetensors \
        --input $f --target $t --method deeplift-shap --baselines /tmp/dls_baselines.safetensors \
        --out /tmp/dlcheck/$s.t$t.deeplift-shap.safetensors; done; done
    python docs/bench/deeplift_parity.py compare SLICES…

Prints, per method, the worst max |tgc − Captum| / max |Captum| over slices and targets, and
Captum's and tgc's convergence deltas for DeepLift.
"""
import sys, os, warnings, torch, torchvision
from safetensors.torch import save_file, load_file

warnings.filterwarnings('ignore')
torch.set_num_threads(2)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nifti_slice import read

if sys.argv[1] == 'weights':
    torch.manual_seed(0)
    m = torchvision.models.resnet18()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1); mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5); mod.bias.data.uniform_(-0.1, 0.1)
    save_file({k: v.contiguous() for k, v in m.state_dict().items() if not k.endswith('num_batches_tracked')}, '/tmp/r18.safetensors')
    torch.manual_seed(2)
    save_file({'weight': torch.randn(2, 512) * 0.05, 'bias': torch.randn(2) * 0.1}, '/tmp/r18_head.safetensors')
    torch.manual_seed(3)
    ny, nx = read(sys.argv[2]).shape if len(sys.argv) > 2 else (176, 208)
    save_file({'baselines': torch.rand(3, 3, ny, nx) * 0.2}, '/tmp/dls_baselines.safetensors')
    sys.exit(0)

from captum.attr import DeepLift, DeepLiftShap, Deconvolution


def split_relus(model):
    """Each BasicBlock's second ReLU call gets a module of its own (Captum's DeepLift needs it)."""
    for layer in [model.layer1, model.layer2, model.layer3, model.layer4]:
        for block in layer:
            block.relu2 = torch.nn.ReLU()

            def forward(self, x):
                identity = x if self.downsample is None else self.downsample(x)
                out = self.relu(self.bn1(self.conv1(x)))
                return self.relu2(self.bn2(self.conv2(out)) + identity)
            block.forward = forward.__get__(block)
    return model


model = torchvision.models.resnet18()
sd = load_file('/tmp/r18.safetensors'); model.load_state_dict({k: v for k, v in sd.items() if not k.startswith('fc.')}, strict=False)
head = load_file('/tmp/r18_head.safetensors')
model.fc = torch.nn.Linear(512, 2); model.fc.weight.data = head['weight']; model.fc.bias.data = head['bias']
model = split_relus(model).eval()
baselines = load_file('/tmp/dls_baselines.safetensors')['baselines']

worst = {'deeplift': 0.0, 'deconvolution': 0.0, 'deeplift-shap': 0.0}
for path in sys.argv[2:]:
    x = torch.from_numpy(read(path))[None, None].repeat(1, 3, 1, 1)
    stem = path.split('/')[-1].replace('.nii.gz', '')
    for t in (0, 1):
        dl, delta = DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=t, return_convergence_delta=True)
        theirs = {
            'deeplift': dl,
            'deconvolution': Deconvolution(model).attribute(x, target=t),
            'deeplift-shap': DeepLiftShap(model).attribute(x, baselines=baselines, target=t),
        }
        for m, ref in theirs.items():
            f = f'/tmp/dlcheck/{stem}.t{t}.{m}.safetensors' if m != 'deeplift-shap' else f'/tmp/dlcheck/{stem}.t{t}.deeplift-shap.safetensors'
            ours = load_file(f)
            err = ((ours['attribution'] - ref[0].detach()).abs().max() / ref.abs().max()).item()
            worst[m] = max(worst[m], err)
            if m == 'deeplift':
                print(f'{stem} target {t}: Captum delta {delta.item():.3e}, tgc delta {ours["convergence_delta"].item():.3e}, relative error {err:.2e}')
print({m: f'{v:.2e}' for m, v in worst.items()})

# Layer Integrated Gradients at layer3 (tgc: --method layer-integrated-gradients --layer layer3
# --out /tmp/dlcheck/$s.t$t.lig.safetensors), the layer-shaped attribution.
from captum.attr import LayerIntegratedGradients
worst_lig = 0.0
for path in sys.argv[2:]:
    x = torch.from_numpy(read(path))[None, None].repeat(1, 3, 1, 1)
    stem = path.split('/')[-1].replace('.nii.gz', '')
    for t in (0, 1):
        f = f'/tmp/dlcheck/{stem}.t{t}.lig.safetensors'
        if not os.path.exists(f):
            continue
        ref, delta = LayerIntegratedGradients(model, model.layer3).attribute(x, target=t, n_steps=50, return_convergence_delta=True)
        ours = load_file(f)
        err = ((ours['layer_attribution'] - ref[0].detach()).abs().max() / ref.abs().max()).item()
        print(f'{stem} target {t}: layer IG relative error {err:.2e}, Captum delta {delta.item():.3e}, tgc delta {ours["convergence_delta"].item():.3e}')
        worst_lig = max(worst_lig, err)
print(f'layer-integrated-gradients: {worst_lig:.2e}')
