"""The CAM family, Occlusion, Feature Ablation and NoiseTunnel of tgc against pytorch-grad-cam
and Captum on real slices, same random ResNet-18 weights (not part of the project; run with a
Python that has torch, torchvision, captum, grad-cam and safetensors):

    python docs/bench/features_parity.py weights          # writes /tmp/r18.safetensors
    python docs/bench/cam_parity.py head                  # writes /tmp/r18_head.safetensors
    for f in SLICES; do tgc explain --backbone resnet18 --weights /tmp/r18.safetensors \
        --model /tmp/r18_head.safetensors --input $f --target 1 \
        --method hirescam,gradcam++,xgradcam,layercam,eigencam,eigengradcam,scorecam,ablationcam,occlusion,feature-ablation \
        --out /tmp/camcheck/$(basename $f .nii.gz).safetensors; done
    python docs/bench/cam_parity.py compare SLICES…
"""
import sys, os, gzip, struct, numpy as np, torch, torchvision
from safetensors.torch import save_file, load_file

if sys.argv[1] == 'head':
    torch.manual_seed(2)
    save_file({'weight': torch.randn(2, 512) * 0.05, 'bias': torch.randn(2) * 0.1}, '/tmp/r18_head.safetensors')
    sys.exit(0)
torch.set_num_threads(2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nifti_slice import read

model = torchvision.models.resnet18()
sd = load_file('/tmp/r18.safetensors'); model.load_state_dict({k: v for k, v in sd.items() if not k.startswith('fc.')}, strict=False)
head = load_file('/tmp/r18_head.safetensors')
model.fc = torch.nn.Linear(512, 2); model.fc.weight.data = head['weight']; model.fc.bias.data = head['bias']
model.eval()
from pytorch_grad_cam import HiResCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, EigenCAM, EigenGradCAM, ScoreCAM, AblationCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from captum.attr import Occlusion, FeatureAblation

cams = {'hirescam': HiResCAM, 'gradcam++': GradCAMPlusPlus, 'xgradcam': XGradCAM, 'layercam': LayerCAM,
        'eigencam': EigenCAM, 'eigengradcam': EigenGradCAM, 'scorecam': ScoreCAM, 'ablationcam': AblationCAM}
worst = {}
for path in sys.argv[2:]:
    x = torch.from_numpy(read(path))[None, None].repeat(1, 3, 1, 1)
    stem = path.split('/')[-1].replace('.nii.gz', '')
    targets = [ClassifierOutputTarget(1)]
    for name, cls in cams.items():
        cam = cls(model=model, target_layers=[model.layer4])
        if name in ('scorecam', 'ablationcam'):
            cam.batch_size = 16 if name == 'scorecam' else 32
        outputs = cam.activations_and_grads(x)
        model.zero_grad()
        sum(t(o) for t, o in zip(targets, outputs)).backward(retain_graph=True)
        acts = cam.activations_and_grads.activations[0].cpu().data.numpy()
        grads = cam.activations_and_grads.gradients[0].cpu().data.numpy()
        theirs = cam.get_cam_image(x, model.layer4, targets, acts, grads, False)[0]
        ours = load_file(f'/tmp/camcheck/{stem}.{name}.safetensors')['layer_attribution'].numpy()
        if name in ('eigencam', 'eigengradcam', 'scorecam', 'ablationcam'):
            score = abs(np.corrcoef(ours.flatten(), theirs.flatten())[0, 1])   # sign of an eigenvector is arbitrary
            worst[name + ' (correlation)'] = min(worst.get(name + ' (correlation)', 1.0), score)
        else:
            rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
            worst[name] = max(worst.get(name, 0.0), rel)
    occ = Occlusion(model).attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), target=1, baselines=0)
    ours = load_file(f'/tmp/camcheck/{stem}.occlusion.safetensors')['attribution'].numpy()
    worst['occlusion'] = max(worst.get('occlusion', 0), (np.abs(ours - occ[0].detach().numpy()).max() / np.abs(occ).max()).item())
    h, w = x.shape[-2:]
    mask = torch.arange(h)[:, None] // 16 * ((w + 15) // 16) + torch.arange(w)[None, :] // 16
    fa = FeatureAblation(model).attribute(x, target=1, baselines=0, feature_mask=mask[None, None].expand(1, 3, h, w))
    ours = load_file(f'/tmp/camcheck/{stem}.feature-ablation.safetensors')['attribution'].numpy()
    worst['feature-ablation'] = max(worst.get('feature-ablation', 0), (np.abs(ours - fa[0].detach().numpy()).max() / np.abs(fa).max()).item())
for k, v in worst.items():
    print(f'{k}: {len(sys.argv) - 2} real slices, {"min" if "correlation" in k else "max relative difference"} {v:.2e}')
