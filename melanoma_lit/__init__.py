"""melanoma_lit: Lightning + Hydra framework for dermoscopic skin-lesion classification."""

__version__ = "0.1.0"
