"""Everything else is in pyproject.toml; this file only computes the packages, which pyproject.toml cannot.

The checkout keeps the Hydra configs in ``conf/`` beside the package; the wheel ships them inside it, as the
package ``melanoma_lit.conf`` (``conf/`` with every subfolder, YAML files only). An editable install maps that
package to the checkout's ``conf/``, so edits take effect without reinstalling. ``melanoma_lit.cli.CONFIG_DIR``
finds either. ``hydra_plugins.melanoma_lit_launcher`` names the project's SLURM launcher where Hydra looks for
launchers (the ``hydra_plugins`` namespace, shared with Hydra's own plugins).
"""

from setuptools import find_namespace_packages, find_packages, setup

CONF = ["melanoma_lit.conf", *(f"melanoma_lit.conf.{name}" for name in find_namespace_packages(where="conf"))]

setup(
    packages=[*find_packages(include=["melanoma_lit", "melanoma_lit.*"]), *CONF, "hydra_plugins.melanoma_lit_launcher"],
    package_dir={"melanoma_lit.conf": "conf"},
    package_data={name: ["*.yaml"] for name in CONF},
)
