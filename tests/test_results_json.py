"""Issue 22: results.json at most 1.5x its float32 payload without losing anything.

Default (``json_arrays="base64"``): every float array is ``{"dtype", "shape", "base64"}`` of its exact
little-endian bytes, so the JSON holds exactly results.npz's values; ``"lists"``: today's readable
5-decimal lists. load_tracks reads both and files from before the option.
"""
import base64
import json

import numpy as np
import pytest

from posebert_plug.types import JSON_DECIMALS, RefinedTrack, VideoInfo, load_tracks, save_tracks

FIELDS = ("rotmats", "transl", "joints", "betas", "keypoints")


def _track(track_id, n, first=0, keypoints=False, seed=0):
    """A realistic refined track: random rotations, a walking pelvis 3-8 m away, joints around it,
    a few filled frames, one NaN frame (as an unplaceable frame is written)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, 24, 3, 3)))
    transl = np.stack([np.linspace(-1, 1, n), np.full(n, 0.3), np.linspace(3, 8, n)], -1)
    joints = transl[:, None] + rng.normal(0, 0.4, (n, 24, 3))
    joints[n // 2] = np.nan
    observed = rng.random(n) > 0.1
    kp = (joints[:, :17] + rng.normal(0, 0.01, (n, 17, 3))).astype(np.float32) if keypoints else None
    return RefinedTrack(track_id, np.arange(first, first + n), q.astype(np.float32), transl.astype(np.float32),
                        joints.astype(np.float32), observed, rng.normal(0, 1, 10).astype(np.float32), "smpl",
                        keypoints=kp, keypoint_layout="h36m17" if keypoints else None)


def _payload(tracks):
    """Bytes of the arrays as float32 (frames as int32, observed as bytes): what the JSON carries."""
    return sum(sum(getattr(t, k).size * 4 for k in FIELDS if getattr(t, k) is not None) + t.frames.size * 4
               + t.observed.size for t in tracks)


def _same(a, b, exact=True):
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        assert (x.track_id, x.preset, x.side, x.keypoint_layout) == (y.track_id, y.preset, y.side, y.keypoint_layout)
        assert np.array_equal(x.frames, y.frames) and np.array_equal(x.observed, y.observed)
        for k in FIELDS:
            u, v = getattr(x, k), getattr(y, k)
            assert (u is None) == (v is None), k
            if u is None:
                continue
            assert u.dtype == v.dtype == np.float32 and u.shape == v.shape, k
            if exact:   # bit for bit, NaN included
                assert u.tobytes() == v.tobytes(), k
            else:
                np.testing.assert_allclose(u, v, atol=0.51 * 10 ** -JSON_DECIMALS, err_msg=k)


@pytest.fixture
def tracks():
    # 6 people of 300 frames (10 s at 30 fps) and a short one with keypoints: a crowd clip's results.
    return [_track(i, 300, first=5 * i, seed=i) for i in range(6)] + [_track(6, 40, keypoints=True, seed=6)]


def test_base64_json_equals_npz_bit_for_bit_and_is_at_most_1_5x_float32(tracks, tmp_path):
    v = VideoInfo(768, 576, 30.0)
    save_tracks(tmp_path / "r.npz", tracks, v, meta={"schema": "x"})
    save_tracks(tmp_path / "r.json", tracks, v, meta={"schema": "x"})
    npz, js = load_tracks(tmp_path / "r.npz"), load_tracks(tmp_path / "r.json")
    _same(tracks, npz)
    _same(npz, js)
    ratio = (tmp_path / "r.json").stat().st_size / _payload(tracks)
    assert ratio <= 1.5, ratio
    assert ratio >= 4 / 3        # base64 cannot do better: the check above measures the real file
    d = json.load(open(tmp_path / "r.json"))
    assert d["meta"]["schema"] == "x" and d["meta"]["json_arrays"]["encoding"] == "base64"
    t0 = d["tracks"][0]
    assert t0["rotmats"]["dtype"] == "float32" and t0["rotmats"]["shape"] == [300, 24, 3, 3]
    assert isinstance(t0["frames"], list) and isinstance(t0["observed"], list)   # ints and bools stay lists


def test_a_reader_decodes_from_the_meta_alone(tracks, tmp_path):
    """The decode recipe the file gives (meta.json_arrays.decode), evaluated with only json, base64 and numpy."""
    save_tracks(tmp_path / "r.json", tracks[-1:])
    d = json.load(open(tmp_path / "r.json"))
    recipe = d["meta"]["json_arrays"]["decode"]
    for k in FIELDS:
        a = eval(recipe, {"numpy": np, "base64": base64}, {"a": d["tracks"][0][k]})
        assert a.tobytes() == getattr(tracks[-1], k).tobytes(), k


def test_lists_option_is_readable_and_still_loads(tracks, tmp_path):
    tracks = tracks[:1] + tracks[-1:]
    save_tracks(tmp_path / "r.json", tracks, json_arrays="lists")
    d = json.load(open(tmp_path / "r.json"))
    assert d["meta"]["json_arrays"]["encoding"] == "lists"
    assert isinstance(d["tracks"][0]["rotmats"], list) and len(d["tracks"][0]["rotmats"][0]) == 24
    _same(tracks, load_tracks(tmp_path / "r.json"), exact=False)
    assert (tmp_path / "r.json").stat().st_size > 1.5 * _payload(tracks)   # why lists are not the default
    with pytest.raises(ValueError, match="json_arrays"):
        save_tracks(tmp_path / "bad.json", tracks, json_arrays="hex")
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad.json.part").exists()


def test_old_results_json_still_loads(tracks, tmp_path):
    """A file written before json_arrays: no meta.json_arrays, lists with 5 decimals (or 17-digit floats)."""
    t = tracks[-1]
    old = {"video": None, "tracks": [{k: (np.round(v.astype(np.float64), 5).tolist() if isinstance(v, np.ndarray)
                                          and v.dtype.kind == "f" else v.tolist() if isinstance(v, np.ndarray) else v)
                                      for k, v in t.to_dict().items()}]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    _same([t], load_tracks(tmp_path / "old.json"), exact=False)


def test_a_corrupt_base64_array_is_refused(tracks, tmp_path):
    save_tracks(tmp_path / "r.json", tracks[-1:])
    d = json.load(open(tmp_path / "r.json"))
    d["tracks"][0]["joints"]["shape"][0] += 1
    (tmp_path / "r.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="values for shape"):
        load_tracks(tmp_path / "r.json")
    d["tracks"][0]["joints"]["dtype"] = "object"
    (tmp_path / "r.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="only float arrays"):
        load_tracks(tmp_path / "r.json")
