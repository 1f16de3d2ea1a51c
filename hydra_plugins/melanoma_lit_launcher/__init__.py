"""``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml): Hydra takes launchers only from classes defined in the
``hydra_plugins`` namespace, so the project's launcher (melanoma_lit.runs.slurm) gets its name here.

Hydra imports every ``hydra_plugins`` module when it starts, so this imports one light module, and defines nothing
where the sweep extra (hydra-submitit-launcher) is not installed.
"""

try:
    from melanoma_lit.runs import slurm as _slurm
except ImportError:  # no hydra-submitit-launcher: hydra/launcher=slurm then names the missing plugin class
    pass
else:

    class SlurmLauncher(_slurm.SlurmLauncher):
        """melanoma_lit.runs.slurm.SlurmLauncher, under a name Hydra accepts."""
