"""Synthetic dermoscopy images in the official ISIC layouts: a licence-free dataset for demos and tests.

Each class is drawn with the features dermatologists read (asymmetry, border, colours, diameter,
class-typical structures) on varied skin, with hair, vignetting, lighting and sensor noise. A lesion
is photographed 1-4 times (new pose and lighting, same lesion), so lesion-grouped splits matter.
Everything derives from ``(seed, index)``: the same seed gives byte-identical files in any order.
"""

from melanoma_lit.data.synthetic.cohort import DEFAULT_CLASS_FREQUENCIES
from melanoma_lit.data.synthetic.generator import COMPLETE_MARKER, ensure_synthetic, generate
from melanoma_lit.data.synthetic.layouts import FOLDER_NAMES

__all__ = ["COMPLETE_MARKER", "DEFAULT_CLASS_FREQUENCIES", "FOLDER_NAMES", "ensure_synthetic", "generate"]
