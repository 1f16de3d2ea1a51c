"""What a run folder holds (file names, job record, resume) and the Hydra callbacks that guard and record runs."""
