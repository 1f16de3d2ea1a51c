"""The project's own error type: every bad input a user can cause raises it with a fix."""

from __future__ import annotations


class MelanomaLitError(Exception):
    """A user-facing error: the message names the file/row/id and says how to fix it."""


class DataError(MelanomaLitError):
    """Bad or missing data files, tables or images."""


class ConfigError(MelanomaLitError):
    """A configuration value that cannot work."""
