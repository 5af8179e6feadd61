import os

import numpy as np
import pytest
import torch

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
SHARED = os.path.abspath(os.environ.get("POSEBERT_SHARED", SHARED))


def shared_path(*parts):
    return os.path.join(SHARED, *parts)


# One torch thread in the test process (POSEBERT_TEST_THREADS overrides). The tests' tensors are small:
# a second intra-op thread gains little on them, and on a busy shared machine (other test runs, CI
# neighbours) OpenMP threads that wait on each other made in-process training 10x slower (15 s vs 1.5 s).
torch.set_num_threads(int(os.environ.get("POSEBERT_TEST_THREADS", "1")))

needs_shared = pytest.mark.skipif(not os.path.isdir(shared_path("data")),
                                  reason="../shared/data is absent (bare clone): the real mocap/video tests need it")


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """Tests that draw from the global torch/numpy generators see the same draws on every run."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def body():
    from posebert_plug.body_model import DefaultBodyModel
    return DefaultBodyModel()


def random_motion(T=90, seed=0, fps=30.0):
    """A smooth synthetic SMPL-24 motion: sinusoidal joint rotations + a walk forward."""
    import roma
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T, dtype=torch.float64)[:, None, None] / fps
    amp = torch.rand(1, 24, 3, generator=g, dtype=torch.float64) * 0.5
    freq = 0.5 + torch.rand(1, 24, 3, generator=g, dtype=torch.float64) * 1.5
    phase = torch.rand(1, 24, 3, generator=g, dtype=torch.float64) * 6.28
    rv = amp * torch.sin(2 * np.pi * freq * t + phase)
    R = roma.rotvec_to_rotmat(rv)
    transl = torch.zeros(T, 3, dtype=torch.float64)
    transl[:, 2] = torch.arange(T) * 1.2 / fps
    transl[:, 1] = 0.9
    return R.numpy(), transl.numpy()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A training cache made from generated motion (no ../shared needed)."""
    from posebert_plug.rotations import rotmat_to_6d
    out = tmp_path_factory.mktemp("cache")
    for split, seeds in (("train", range(6)), ("val", range(100, 102))):
        rots, trs, lens = [], [], []
        for s in seeds:
            R, tr = random_motion(T=120, seed=s)
            rots.append(rotmat_to_6d(torch.as_tensor(R)).numpy().astype(np.float16))
            trs.append(tr.astype(np.float32))
            lens.append(len(R))
        lens = np.array(lens)
        np.savez(out / f"{split}.npz", rot6d=np.concatenate(rots), transl=np.concatenate(trs),
                 clip_start=np.concatenate([[0], np.cumsum(lens)[:-1]]), clip_len=lens,
                 clip_name=np.array([f"gen{s}" for s in seeds]), clip_source=np.array(["gen"] * len(seeds)))
    return out


@pytest.fixture
def tiny_size(monkeypatch):
    """A ``posebert-train --size`` for tests: a 1-block, 32-wide PoseBERT. Training code, checkpoint format,
    resuming and loading are the same at every size; only the arithmetic per step shrinks (the default
    ``cpu`` size is ~0.3 s a step on a 2-core machine, several seconds under load)."""
    from posebert_plug import train
    monkeypatch.setitem(train.MODEL_SIZES, "test-tiny", dict(dim=32, depth=1, heads=2, mlp_dim=64))
    return "test-tiny"


def extract_members(archive, names, dest):
    """Extract the members of a .tar.xz whose paths end with ``names`` into ``dest``, reading the archive
    as a stream and stopping at the last one found (``tar -x`` with member names and ``getmembers()``
    both decompress the whole archive: seconds for one small file of these mocap packs)."""
    import tarfile
    wanted = set(names)
    with tarfile.open(archive, "r|xz") as tf:
        for m in tf:
            hit = next((n for n in wanted if m.name == n or m.name.endswith("/" + n)), None)
            if hit is not None:
                tf.extract(m, dest, filter="data")
                wanted.discard(hit)
                if not wanted:
                    return
    raise FileNotFoundError(f"{archive}: no member {', '.join(sorted(wanted))}")
