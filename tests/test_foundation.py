"""Issue 2: skeletons, rotations, body models, data types."""
import json

import numpy as np
import pytest
import roma
import torch
from hypothesis import given, settings, strategies as st

from posebert_plug import load_body_model
from posebert_plug.body_model import BodyModelNotFound
from posebert_plug.kinematics import forward_kinematics
from posebert_plug.rotations import (rotmat_to_6d, rotmat_to_rotvec, rotvec_to_rotmat, sixd_to_rotmat,
                                     rotation_between, slerp_rotmat)
from posebert_plug.skeletons import SMPL24, available_skeletons, get_skeleton, mapping
from posebert_plug.types import Detection, RefinedTrack, Track, VideoInfo, load_tracks, save_tracks


# ---- skeletons -------------------------------------------------------------------

def test_registry_has_all_layouts():
    for name in ("smpl24", "hybrik29", "h36m17", "coco17", "mediapipe33", "hand21", "mano16"):
        assert name in available_skeletons()
    assert get_skeleton("COCO-17").num_joints == 17
    assert get_skeleton("MediaPipe-33").num_joints == 33
    assert get_skeleton("smpl").parents == tuple(SMPL24.parents)


def test_flip_maps_are_involutions_and_swap_sides():
    for name in available_skeletons():
        s = get_skeleton(name)
        f = s.flip_map
        assert (f[f] == np.arange(s.num_joints)).all()
        for j, name_j in enumerate(s.joints):
            if name_j.startswith("left_"):
                assert s.joints[f[j]] == "right_" + name_j[5:]


def test_mapping_between_layouts():
    src, dst = mapping("smpl24", "coco17")
    coco = get_skeleton("coco17")
    assert [coco.joints[d] for d in dst] == [SMPL24.joints[s] for s in src]
    assert "left_knee" in [coco.joints[d] for d in dst]
    src, dst = mapping("mediapipe33", "coco17")
    assert len(dst) == 17  # MediaPipe contains every COCO joint


def test_mano_to_openpose_permutation():
    from posebert_plug.skeletons import MANO21_TO_OPENPOSE, HAND21, MANO16
    names = list(MANO16.joints) + ["thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip"]
    assert [names[i] for i in MANO21_TO_OPENPOSE] == list(HAND21.joints)


def test_unknown_layout_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown keypoint layout 'coco18'.*known layouts"):
        get_skeleton("coco18")


# ---- rotations ---------------------------------------------------------------------

rotvecs = st.lists(st.tuples(*[st.floats(-1, 1)] * 3), min_size=1, max_size=16)


def _batch(vs, angle_scale):
    v = torch.tensor(vs, dtype=torch.float64)
    n = v.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return v / n * (torch.rand(len(vs), 1, dtype=torch.float64) * angle_scale)


@settings(max_examples=60, deadline=None)
@given(rotvecs, st.floats(0.0, np.pi - 1e-3))
def test_rotation_round_trips(vs, max_angle):
    rv = _batch(vs, max_angle)
    R = rotvec_to_rotmat(rv)
    assert torch.allclose(sixd_to_rotmat(rotmat_to_6d(R)), R, atol=1e-9)
    assert torch.allclose(rotvec_to_rotmat(rotmat_to_rotvec(R)), R, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(rotvecs, st.floats(np.pi - 1e-4, np.pi - 1e-7))
def test_round_trip_near_180_degrees(vs, angle):
    v = torch.nn.functional.normalize(torch.tensor(vs, dtype=torch.float64) + 1e-3, dim=-1) * angle
    R = rotvec_to_rotmat(v)
    assert torch.allclose(rotvec_to_rotmat(rotmat_to_rotvec(R)), R, atol=1e-6)
    assert torch.allclose(sixd_to_rotmat(rotmat_to_6d(R)), R, atol=1e-9)


def test_gram_schmidt_projects_noisy_6d_to_a_rotation():
    x = torch.randn(5, 7, 6, dtype=torch.float64)
    R = sixd_to_rotmat(x)
    assert roma.is_rotation_matrix(R, epsilon=1e-9)


def test_rotation_helpers_check_shapes():
    with pytest.raises(ValueError, match=r"expected shape \(\.\.\., 6\)"):
        sixd_to_rotmat(torch.zeros(3, 5))
    a = torch.tensor([[1.0, 0, 0]], dtype=torch.float64)
    b = torch.tensor([[0, 1.0, 0]], dtype=torch.float64)
    assert torch.allclose(rotation_between(a, b)[0] @ a[0], b[0], atol=1e-12)
    R0, R1 = torch.eye(3, dtype=torch.float64)[None], rotvec_to_rotmat(torch.tensor([[0, 0, 1.0]], dtype=torch.float64))
    mid = slerp_rotmat(R0, R1, torch.tensor([0.5]))
    assert torch.allclose(rotmat_to_rotvec(mid), torch.tensor([[0, 0, 0.5]], dtype=torch.float64), atol=1e-9)


# ---- body model ----------------------------------------------------------------------

def test_identity_pose_gives_tpose_rest_joints(body):
    out = body(torch.eye(3).expand(24, 3, 3)[None])
    assert torch.allclose(out.joints[0], body.rest_joints, atol=1e-6)
    assert torch.allclose(out.vertices[0], body.template_vertices, atol=1e-5)
    rest = body.rest_joints
    # T-pose: arms horizontal along +-X at shoulder height, left is +X.
    for j in (18, 20, 22):
        assert rest[j, 0] > 0.3 and abs(rest[j, 1] - rest[16, 1]) < 1e-3
    assert torch.allclose(rest[19, 0], -rest[18, 0])


def test_joints_equal_forward_kinematics(body):
    R = roma.rotvec_to_rotmat(torch.randn(3, 24, 3) * 0.4)
    t = torch.randn(3, 3)
    out = body(R, t)
    fk, _ = forward_kinematics(R, body.rest_joints, SMPL24.parents, t)
    assert torch.allclose(out.joints, fk, atol=1e-5)
    assert out.vertices.shape == (3, body.num_vertices, 3)
    assert len(body.faces) > 20000 and body.faces.max() < body.num_vertices


def test_elbow_bend_moves_the_wrist(body):
    R = torch.eye(3).repeat(1, 24, 1, 1)
    # Left elbow flexes forward: forearm from +X to +Z (rotation of -90 degrees about +Y).
    R[0, 18] = roma.rotvec_to_rotmat(torch.tensor([0.0, -np.pi / 2, 0.0]))
    J = body(R).joints[0]
    forearm = (body.rest_joints[20] - body.rest_joints[18]).norm()
    expected = J[18] + torch.tensor([0.0, 0.0, 1.0]) * forearm
    assert torch.allclose(J[20], expected, atol=1e-5)
    assert torch.allclose(J[16], body.rest_joints[16], atol=1e-6)  # the shoulder did not move


def test_keypoint_regressors(body):
    out = body(torch.eye(3).expand(1, 24, 3, 3))
    for layout, K in (("coco17", 17), ("h36m17", 17), ("mediapipe33", 33)):
        kp = body.keypoints(out, layout)[0]
        assert kp.shape == (K, 3)
        fast = body.pose_keypoints(torch.eye(3).expand(1, 24, 3, 3), None, layout)[0]
        assert torch.allclose(kp, fast, atol=1e-5)
    coco = body.keypoints(out, "coco17")[0]
    assert coco[0, 1] > coco[5, 1] > coco[11, 1] > coco[15, 1]  # nose above shoulders above hips above ankles
    assert coco[5, 0] > 0 > coco[6, 0]                           # left shoulder on +X


def test_body_model_errors(tmp_path):
    with pytest.raises(BodyModelNotFound, match="smpl.is.tue.mpg.de"):
        load_body_model("smpl", model_dir=str(tmp_path / "nope"))
    with pytest.raises(BodyModelNotFound, match="model_dir"):
        load_body_model("smpl")
    with pytest.raises(ValueError, match="unknown body model kind"):
        load_body_model("smplx-ish")
    b = load_body_model()
    with pytest.raises(ValueError, match=r"\(\.\.\., 24, 3, 3\)"):
        b(torch.zeros(2, 23, 3, 3))
    with pytest.raises(ValueError, match="transl"):
        b(torch.eye(3).expand(2, 24, 3, 3), torch.zeros(3, 3))
    with pytest.raises(KeyError, match="layout"):
        b.keypoints(b(torch.eye(3).expand(1, 24, 3, 3)), "coco18")


# ---- data types ----------------------------------------------------------------------

def test_detection_validates_shapes_and_nan():
    with pytest.raises(ValueError, match=r"kp2d \(coco17\): expected shape \(17, 2\)"):
        Detection(0, kp2d=np.zeros((18, 2)), layout2d="coco17")
    with pytest.raises(ValueError, match="layout2d"):
        Detection(0, kp2d=np.zeros((17, 2)))
    kp = np.random.rand(17, 2) * 100
    kp[3] = np.nan
    d = Detection(0, kp2d=kp, layout2d="coco17")
    assert d.kp2d_conf[3] == 0 and np.isfinite(d.kp2d).all() and d.box is not None
    # A NaN box is a missing box: derived from the visible keypoints, or None without them.
    d = Detection(0, box=[np.nan, 0, 10, 10], kp2d=kp, layout2d="coco17")
    vis = np.delete(kp, 3, axis=0)
    assert np.allclose(d.box, [*vis.min(0), *vis.max(0)])
    assert Detection(0, box=[np.inf, 0, 10, 10]).box is None
    assert np.allclose(Detection(0, box=[50, 60, 10, 20]).xyxy, [10, 20, 50, 60])   # corners in either order


def test_track_marks_gaps_and_round_trips(tmp_path):
    v = VideoInfo(640, 480, 30)
    dets = [Detection(f, box=[0, 0, 10, 20], kp2d=np.ones((17, 2)) * f, layout2d="coco17") for f in (3, 4, 7)]
    t = Track.from_detections(1, dets, v)
    assert list(t.frames) == [3, 4, 5, 6, 7]
    assert list(t.observed) == [True, True, False, False, True]
    assert np.isnan(t.kp2d[2]).all()
    with pytest.raises(ValueError, match="two detections in one frame"):
        Track.from_detections(1, dets + [Detection(3, box=[0, 0, 1, 1])], v)
    r = RefinedTrack(1, np.arange(5), np.tile(np.eye(3), (5, 24, 1, 1)), np.zeros((5, 3)), np.zeros((5, 24, 3)),
                     t.observed, np.zeros(10), "kp2d-coco17")
    for name in ("r.npz", "r.json"):
        save_tracks(tmp_path / name, [r], v)
        back = load_tracks(tmp_path / name)[0]
        assert back.track_id == 1 and (back.observed == r.observed).all()
        assert np.allclose(back.rotmats, r.rotmats) and back.preset == "kp2d-coco17"
    assert json.loads(r.to_json())["frames"] == [0, 1, 2, 3, 4]
