"""One exception family. Every message says what was wrong and what to do about it.

The CLI turns any ``CodesignError`` into one line on stderr and exit status 2.
"""

from __future__ import annotations


class CodesignError(Exception):
    """Base of every error a user can cause (bad path, bad config, bad data)."""


class ConfigError(CodesignError, ValueError):
    """A recipe, flag or spec value is invalid (unknown key, width out of range, ...)."""


class DataError(CodesignError, ValueError):
    """Data is missing, empty or not finite."""


class CheckpointError(CodesignError, ValueError):
    """A checkpoint cannot be read or does not fit the model."""


class ModelError(CodesignError, KeyError):
    """An unknown model name (the message suggests close names)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class QuantError(CodesignError, ValueError):
    """Quantization cannot be applied as asked."""


class SparsityError(CodesignError, ValueError):
    """Pruning cannot be applied as asked (N:M not dividing a layer, bad level, ...)."""


class HardwareError(CodesignError, ValueError):
    """A hardware spec or energy table is invalid, or a layer cannot be mapped."""


class ResultError(CodesignError, ValueError):
    """A stored result (``variant.json``, search tables) does not parse into its type."""


class DivergenceError(CodesignError, ArithmeticError):
    """Training went non-finite (loss or weights NaN/Inf); a lower learning rate is the fix."""


class LockHeldError(CodesignError, RuntimeError):
    """Another live process holds the lock of an output directory (see ``codesign.locks``)."""
