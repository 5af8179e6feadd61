"""HRNet / mmpose 2D keypoints (COCO-17), three JSON flavours."""
from __future__ import annotations

import json

import numpy as np

from posebert_plug.skeletons import get_skeleton
from posebert_plug.types import Detection
from .base import Adapter, AdapterError, group_by_frame, register


@register
class MMPoseAdapter(Adapter):
    name = "mmpose"
    aliases = ("hrnet",)
    reads = ("mmpose JSON: the inferencer's video file [{frame_id (0-based), instances: [...]}], the top-down demo's "
             "{meta_info, instance_info: [{frame_id (1-based), instances}]}, or COCO results rows "
             "{image_id, keypoints (51 flat x,y,score), score} (image_id used as the frame index). "
             "Instance: keypoints K x [x, y] px, keypoint_scores K, bbox [[x1,y1,x2,y2]] (nested), bbox_score")
    skeleton = "COCO-17 (or any layout given with layout=...)"
    units = "pixels"
    camera = "none (2D only)"

    def read(self, path, video):
        layout = self.options.get("layout", "coco17")
        K = get_skeleton(layout).num_joints
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise AdapterError(f"{path}: not readable JSON ({e})") from None
        offset = 0
        if isinstance(data, dict) and "instance_info" in data:
            data, offset = data["instance_info"], 1   # the top-down demo numbers frames from 1
        if not isinstance(data, list):
            raise AdapterError(f"{path}: expected a list of frames or COCO result rows")
        dets = []
        for n, item in enumerate(data):
            if not isinstance(item, dict):
                raise AdapterError(f"{path}: entry {n} is not an object")
            if "image_id" in item:  # COCO results row
                kp = np.asarray(item.get("keypoints", []), float)
                if kp.size != 3 * K:
                    raise AdapterError(f"{path}: row {n}: keypoints must hold {3 * K} numbers, got {kp.size}")
                kp = kp.reshape(K, 3)
                dets.append(Detection(int(item["image_id"]), score=float(item.get("score", 1.0)), kp2d=kp[:, :2],
                                      kp2d_conf=np.clip(kp[:, 2], 0, 1), layout2d=layout, source=self.name))
                continue
            if "frame_id" not in item or "instances" not in item:
                raise AdapterError(f"{path}: entry {n} lacks 'frame_id'/'instances'")
            frame = int(item["frame_id"]) - offset
            for inst in item["instances"]:
                kp = np.asarray(inst.get("keypoints", []), float)
                if kp.shape != (K, 2):
                    raise AdapterError(f"{path}: frame {frame}: keypoints must be ({K}, 2), got {kp.shape}")
                sc = np.asarray(inst.get("keypoint_scores", np.ones(K)), float).reshape(-1)
                if sc.shape != (K,):
                    raise AdapterError(f"{path}: frame {frame}: keypoint_scores must be ({K},)")
                box = inst.get("bbox")
                box = np.asarray(box, float).reshape(-1)[:4] if box is not None else None
                bs = inst.get("bbox_score", 1.0)
                bs = float(np.asarray(bs, float).reshape(-1)[0]) if bs is not None else 1.0
                dets.append(Detection(frame, box=box, score=float(np.clip(bs, 0, 1)), kp2d=kp,
                                      kp2d_conf=np.clip(sc, 0, 1), layout2d=layout, source=self.name))
        return group_by_frame(dets)
