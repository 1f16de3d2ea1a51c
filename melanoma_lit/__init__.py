"""melanoma_lit: Lightning + Hydra framework for dermoscopic skin-lesion classification."""

__version__ = "0.1.0"

from melanoma_lit import resolvers as _resolvers  # noqa: F401 - registers the config resolvers
