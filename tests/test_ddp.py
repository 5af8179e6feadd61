"""Issue 22: ``torchrun --nproc_per_node 2 -m posebert_plug.train ... --device cpu`` trains data-parallel.

After one step both ranks hold identical weights, equal to one single-process step on the union of
their batches (each rank draws its own windows: seed + 1000 * rank). The reference step is rebuilt
here from train.py's own pieces (sampling, batch building, loss, clipping, Adam at step 0's rate).
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

from posebert_plug import synth
from posebert_plug.presets import build_training_batch, get_preset, save_checkpoint
from posebert_plug.train import compute_loss, lr_at

B, W, SEED, LR, STEPS = 2, 16, 3, 1e-3, 1


def _torchrun():
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def _initial_model(path):
    """A fixed start for both runs (--init: weights only, every tensor of the same shape kept)."""
    from posebert_plug.model import PoseBERT
    preset = get_preset("smpl")
    torch.manual_seed(0)
    model = PoseBERT(**preset.model_kwargs("cpu"))
    with torch.no_grad():   # the output layer starts at zero: give every layer a gradient at step 1
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    save_checkpoint(model, preset, path)


def _reference_step(cache, init, ranks):
    """One single-process step of train.py on the union of ``ranks``' batches."""
    from posebert_plug.mocap.dataset import MotionCache
    from posebert_plug.model import PoseBERT
    preset = get_preset("smpl")
    body = preset.make_body()
    blob = torch.load(init, weights_only=True)
    kwargs = preset.model_kwargs("cpu")
    kwargs["init_masked"] = blob["config"].get("init_masked") or kwargs.get("init_masked", "mean")
    model = PoseBERT(**kwargs)
    own = model.state_dict()
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items() if k in own and own[k].shape == v.shape},
                          strict=False)
    train = MotionCache(os.path.join(cache, "train.npz"))
    aug = synth.Augment.none()
    mask_kw = {"mix": tuple(synth.MASK_MIX), "max_future": None, "heavy_max": 0.9}
    parts = []
    for rank in ranks:
        rng = np.random.default_rng(SEED + 1000 * rank)
        g = torch.Generator().manual_seed(SEED + 1000 * rank)
        rot6d, tr = train.sample(B, W, rng, speed=aug.speed)
        parts.append(build_training_batch(preset, rot6d, tr, body, g, mask_kw=mask_kw, aug=aug))
    batch = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for group in opt.param_groups:
        group["lr"] = lr_at(0, STEPS, LR)
    model.train()
    loss, _ = compute_loss(model(batch["x"], batch["observed"], return_all=True), batch, body,
                           layout=preset.loss_layout)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return model.state_dict()


def _moved(after, before, k):
    """Per-element step of parameter ``k`` in units of the step's learning rate."""
    return (after[k].double() - before[k].double()) / lr_at(0, STEPS, LR)


def test_two_rank_cpu_torchrun_equals_one_step_on_the_union_of_batches(tiny_cache, tmp_path):
    init = tmp_path / "init.pt"
    _initial_model(init)
    out = tmp_path / "run"
    cmd = _torchrun() + ["--standalone", "--nproc_per_node", "2", "-m", "posebert_plug.train", "--preset", "smpl",
                         "--cache", str(tiny_cache), "--out", str(out), "--steps", str(STEPS), "--batch", str(B),
                         "--window", str(W), "--lr", str(LR), "--seed", str(SEED), "--augment", "off",
                         "--init", str(init), "--val-every", "1000", "--save-every", "1000", "--threads", "1",
                         "--device", "cpu", "--save-rank-params"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    r = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:   # the reference steps run here while the two ranks start (most of torchrun's time)
        before = {k: v.float() for k, v in torch.load(init, weights_only=True)["state_dict"].items()}
        union = _reference_step(tiny_cache, init, (0, 1))
        only0 = _reference_step(tiny_cache, init, (0,))
        _, err = r.communicate(timeout=280)
    finally:
        if r.poll() is None:
            r.kill()
    assert r.returncode == 0, err[-3000:]
    p0 = torch.load(out / "params_rank0.pt", weights_only=True)
    p1 = torch.load(out / "params_rank1.pt", weights_only=True)
    assert p0.keys() == p1.keys()
    for k in p0:   # all-reduced gradients: bit-identical weights on both ranks
        assert torch.equal(p0[k], p1[k]), k
    # rank 0 wrote the checkpoints, holding the same weights
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["step"] == STEPS and all(torch.equal(last["model"][k], p0[k]) for k in p0)

    params = [k for k in p0 if k in before and p0[k].dtype.is_floating_point and not torch.equal(p0[k], before[k])]
    assert len(params) > 10       # the step moved the weights
    # Adam's first step moves each weight by about lr * sign(gradient): compare the steps element by
    # element; only gradients within float rounding of zero may differ (all-reduce vs one backward).
    d_union = torch.cat([(_moved(p0, before, k) - _moved(union, before, k)).abs().flatten() for k in params])
    d_only0 = torch.cat([(_moved(p0, before, k) - _moved(only0, before, k)).abs().flatten() for k in params])
    frac_union = float((d_union > 1e-2).double().mean())
    frac_only0 = float((d_only0 > 1e-2).double().mean())
    print(f"params {len(params)}, elements differing from the union step {frac_union:.2e}, from rank 0 alone {frac_only0:.2f}")
    assert frac_union < 1e-3, (frac_union, float(d_union.max()))
    assert frac_only0 > 0.05, frac_only0   # rank 0's batch alone is another step: the check can tell
