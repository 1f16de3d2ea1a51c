"""The project's own error type: every bad input a user can cause raises it with a fix."""

from __future__ import annotations


class MelanomaLitError(Exception):
    """A user-facing error: the message names the file/row/id and says how to fix it."""


class DataError(MelanomaLitError):
    """Bad or missing data files, tables or images."""


class ConfigError(MelanomaLitError):
    """A configuration value that cannot work."""


def user_message(error: MelanomaLitError) -> str:
    """The error's own paragraph, also when a DataLoader worker raised it.

    torch re-raises a worker's exception as the same type whose message is the worker's whole
    traceback; the paragraph the user needs is what follows the last ``<module>.<type>: ``.
    """
    text = str(error)
    if not text.startswith("Caught ") or "Traceback" not in text:
        return text
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    where = text.rfind(marker)
    return text[where + len(marker) :].strip() if where >= 0 else text
