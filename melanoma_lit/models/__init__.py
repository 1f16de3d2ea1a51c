"""Backbones, heads, losses, metrics and optimisation: nothing here knows file layouts."""
