"""OmegaConf resolvers the configs use; registered when the package is imported, before Hydra resolves."""

from __future__ import annotations

from omegaconf import OmegaConf


def fast_precision(accelerator: str = "auto") -> str:
    """The trainer precision when none is chosen: bf16 autocast (16-bit on GPUs without bf16) where a CUDA GPU
    will run the job, full precision on CPU, so that the GPU fast path is the default."""
    if str(accelerator) not in ("auto", "gpu", "cuda"):
        return "32-true"
    import torch

    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def device_slots() -> int:
    from melanoma_lit.runs.hydra_callbacks import device_slot_count

    return device_slot_count()


OmegaConf.register_new_resolver("melanoma_lit.fast_precision", fast_precision, replace=True)
OmegaConf.register_new_resolver("melanoma_lit.device_slots", device_slots, replace=True)
