"""PoseBERT (paper section 3.2): masked-sequence transformer with an unrolled pose regressor.

Shapes: inputs ``x`` (B, T, in_dim), ``observed`` (B, T) bool. Outputs per
frame: ``pose6d`` (B, T, J*6) and ``transl`` (B, T, 3) = (x2d, y2d, nearness)
of the root in the normalised canonical camera (see ``camera.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rotations import rotmat_to_6d, sixd_to_rotmat


class Attention(nn.Module):
    def __init__(self, dim, heads, dropout=0.0):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x, key_mask, queries=None):
        """x (B, T, D); ``queries``: optional index of the frames whose output is wanted -> (B, Q, D)."""
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if queries is not None:
            q = q[:, :, queries]
        # key_mask (B, 1, 1, T): True where a frame may be attended to (observed frames only).
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, q.shape[2], D))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class Regressor(nn.Module):
    """MLP on [x_t, theta_t] -> delta theta_t; shared by all blocks and all frames."""

    def __init__(self, dim, out_dim, hidden=512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + out_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, out_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x, theta):
        return theta + self.net(torch.cat([x, theta], dim=-1))


class PoseBERT(nn.Module):
    """in_dim: per-frame input size; num_joints: output joints (24 SMPL); dim/depth/heads/mlp_dim: transformer.

    ``init_from_input``: optional (start, stop) slice of the input holding 6D poses;
    when given, observed frames start the regression from their input pose instead
    of the mean pose (a residual variant). ``init_masked``: where frames start then:
    ``"mean"`` (masked frames at the mean pose, the paper), ``"interp"`` (masked frames at
    the linear interpolation of the nearest observed inputs' 6D, nearest at the ends) or
    ``"smooth"`` (every frame at a robust temporal smoothing of the interpolated input:
    running median over 7 frames against outlier poses, then a Gaussian of sigma 3 frames
    against jitter), so the transformer learns a correction to a good filter rather than
    the noise itself.

    ``init_root_from``: optional (start, stop) slice of the input holding the 6D of a
    per-frame frame rotation C (the canonical frame of 3D keypoints, camera <- canonical);
    the root then starts at ``C @ root_offset`` (``root_offset``: the rest pose's canonical
    rotation, a buffer set at training time), interpolated over masked frames and, with
    ``init_masked="smooth"``, robustly smoothed, instead of at the mean root orientation.
    """

    def __init__(self, in_dim, num_joints=24, dim=256, depth=4, heads=8, mlp_dim=512, max_len=256,
                 dropout=0.0, init_from_input=None, init_masked="mean", init_root_from=None):
        super().__init__()
        self.config = dict(in_dim=in_dim, num_joints=num_joints, dim=dim, depth=depth, heads=heads,
                           mlp_dim=mlp_dim, max_len=max_len, dropout=dropout, init_from_input=init_from_input,
                           init_masked=init_masked)
        if init_root_from is not None:
            self.config["init_root_from"] = tuple(init_root_from)
            self.register_buffer("root_offset", torch.eye(3))
        self.num_joints = num_joints
        out_dim = num_joints * 6 + 3
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.blocks = nn.ModuleList([nn.ModuleList([Attention(dim, heads, dropout), FeedForward(dim, mlp_dim, dropout)])
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.regressor = Regressor(dim, out_dim)
        identity6d = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(num_joints)
        self.register_buffer("mean_theta", torch.cat([identity6d, torch.tensor([0.0, 0.0, -1.5])]))

    def forward(self, x, observed, return_all: bool = False, frames=None):
        """x (B, T, in_dim), observed (B, T) bool -> (pose6d (B, T, J*6), transl (B, T, 3)),
        or with ``return_all`` the list of (pose6d, transl) after every block.

        ``frames``: optional 1-D index of the frames wanted (e.g. the newest and the
        predicted one in streaming use); outputs are then (B, len(frames), ...). The
        regressor never feeds back into the tokens, so it only runs on those frames:
        about half the cost of a full forward."""
        B, T, _ = x.shape
        if T > self.pos.shape[0]:
            raise ValueError(f"sequence of {T} frames exceeds the model's window of {self.pos.shape[0]}")
        observed = observed.bool()
        x = torch.nan_to_num(x)  # masked frames may carry NaN; their content is never used
        h = torch.where(observed[..., None], self.embed(x), self.mask_token.to(x.dtype)) + self.pos[:T]
        # A window with nothing observed attends to everything (mask tokens only) rather than to nothing.
        keys = observed | ~observed.any(dim=1, keepdim=True)
        key_mask = keys[:, None, None, :]
        theta = self.mean_theta.expand(B, T, -1)
        s = self.config["init_from_input"]
        if s is not None:
            pose_in = x[..., s[0]:s[1]]
            mode = self.config.get("init_masked", "mean")
            if mode in ("interp", "smooth"):
                pose_in = _interpolate_masked(pose_in, observed, theta[..., : s[1] - s[0]])
                if mode == "smooth":
                    pose_in = _robust_smooth(pose_in)
                start = torch.cat([pose_in, theta[..., s[1] - s[0]:]], dim=-1)
                theta = torch.where(observed.any(1, keepdim=True)[..., None], start, theta)
            else:
                start = torch.cat([pose_in, theta[..., s[1] - s[0]:]], dim=-1)
                theta = torch.where(observed[..., None], start, theta)
        r = self.config.get("init_root_from")
        if r is not None:
            c6 = _interpolate_masked(x[..., r[0]:r[1]], observed, theta[..., :6])
            if self.config.get("init_masked", "mean") == "smooth":
                c6 = _robust_smooth(c6)
            root = rotmat_to_6d(sixd_to_rotmat(c6) @ self.root_offset.to(c6.dtype))
            theta = torch.cat([torch.where(observed.any(1, keepdim=True)[..., None], root, theta[..., :6]),
                               theta[..., 6:]], dim=-1)
        if frames is not None:
            frames = torch.as_tensor(frames, device=x.device)
            theta = theta[:, frames]
        outputs = []
        for i, (attn, ff) in enumerate(self.blocks):
            last = frames is not None and i == len(self.blocks) - 1
            if last:  # nothing reads the last block's other tokens: attend from the wanted frames only
                h = h[:, frames] + attn(h, key_mask, queries=frames)
            else:
                h = h + attn(h, key_mask)
            h = h + ff(h)
            theta = self.regressor(self.norm(h if frames is None or last else h[:, frames]), theta)
            outputs.append((theta[..., :-3], theta[..., -3:]))
        return outputs if return_all else outputs[-1]


def _interpolate_masked(v, observed, fallback):
    """Fill masked frames of v (B, T, D) by linear interpolation between the nearest observed
    frames (nearest value at the ends; ``fallback`` where a row has no observation)."""
    B, T, _ = v.shape
    idx = torch.arange(T, device=v.device).expand(B, T)
    prev = torch.where(observed, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    nxt = torch.where(observed, idx, torch.full_like(idx, T)).flip(1).cummin(dim=1).values.flip(1)
    has_p, has_n = prev >= 0, nxt < T
    p, n = prev.clamp(0, T - 1), nxt.clamp(0, T - 1)
    vp = torch.gather(v, 1, p[..., None].expand_as(v))
    vn = torch.gather(v, 1, n[..., None].expand_as(v))
    w = ((idx - prev).float() / (nxt - prev).clamp_min(1).float())[..., None]
    both = (has_p & has_n)[..., None]
    out = torch.where(both, (1 - w) * vp + w * vn, torch.where(has_p[..., None], vp, vn))
    out = torch.where((has_p | has_n)[..., None], out, fallback)
    return torch.where(observed[..., None], v, out)


def _robust_smooth(v, k: int = 7, sigma: float = 3.0):
    """Running median over k frames, then a Gaussian of ``sigma`` frames; v (B, T, D), edges replicated."""
    B, T, D = v.shape
    p = F.pad(v.transpose(1, 2), (k // 2, k // 2), mode="replicate")
    v = p.unfold(2, k, 1).median(-1).values                                  # (B, D, T)
    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, device=v.device, dtype=v.dtype)
    w = torch.exp(-t ** 2 / (2 * sigma ** 2))
    p = F.pad(v.reshape(B * D, 1, T), (r, r), mode="replicate")
    return F.conv1d(p, (w / w.sum())[None, None]).reshape(B, D, T).transpose(1, 2)
