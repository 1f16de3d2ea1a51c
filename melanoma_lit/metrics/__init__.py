"""The ISIC challenge metrics (parity-tested against the official scorer) and their plots."""
