"""From checkpoints to answers: loading and ensembling models, prediction tables and ISIC layouts, Grad-CAM."""
