"""One provider of body and hand models for everything that turns poses into joints or meshes.

Refinement (the joints of a :class:`~posebert_plug.types.RefinedTrack`), the results files, the
plots and the renderer all ask the same :class:`BodyModels` object, so ``--smpl-dir`` /
``--mano-dir`` change every output alike. The models are loaded on first use and kept by the
object (no process-wide cache): create one per run, or one per worker, and pass it along.

The *prior* bodies (the free body and the free right hand the PoseBERT models were trained
with) are a different thing: they encode inputs and fit poses, whatever the output model is.
"""
from __future__ import annotations

import os

__all__ = ["BodyModels"]


class BodyModels:
    """The output body and hand models of a run.

    smpl_dir: folder with the licensed SMPL files (``SMPL_NEUTRAL.pkl`` ...), or None for the
        free default body. mano_dir: the same for MANO (``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl``).
    body: an already built body model (overrides ``smpl_dir``; e.g. a test's stand-in).
    Every model has ``forward(rotmats, transl, betas)`` -> BodyOutput and
    ``pose_keypoints(rotmats, transl, layout)`` -> (..., K, 3) metres.
    """

    def __init__(self, smpl_dir=None, mano_dir=None, gender: str = "neutral", body=None):
        self.smpl_dir = os.fspath(smpl_dir) if smpl_dir else None
        self.mano_dir = os.fspath(mano_dir) if mano_dir else None
        self.gender = gender
        self._body = body
        self._hands = {}

    @property
    def body(self):
        """The body model (SMPL-24 joints): SMPL when ``smpl_dir`` was given, else the free model."""
        if self._body is None:
            from .body_model import load_body_model
            self._body = load_body_model("smpl" if self.smpl_dir else "default", model_dir=self.smpl_dir,
                                         gender=self.gender)
        return self._body

    def hand(self, side: str = "right"):
        """The hand model of a side (MANO-16 joints): MANO when ``mano_dir`` was given, else the free hand."""
        side = side or "right"
        if side not in self._hands:
            from .hand_model import load_hand_model
            self._hands[side] = load_hand_model("mano" if self.mano_dir else "default", side, self.mano_dir)
        return self._hands[side]

    def for_track(self, track):
        """The model of a track or refined track: a hand of its ``side`` for hands, else the body."""
        side = getattr(track, "side", None)
        return self.hand(side) if side else self.body

    @property
    def licensed(self) -> bool:
        """True when any output model is a licensed one (SMPL or MANO)."""
        return bool(self.smpl_dir or self.mano_dir)
