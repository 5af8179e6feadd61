"""Overlay rendering of refined tracks on video frames (moderngl or pyrender, headless)."""
from .renderer import available_backends, get_renderer, track_colour, vertex_normals

__all__ = ["get_renderer", "available_backends", "track_colour", "vertex_normals"]
