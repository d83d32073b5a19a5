"""Errors a user can act on: each names the input, what was expected and what was found."""


class DiceError(ValueError):
    """Base class for every error this pack raises on bad input."""


class ConditioningError(DiceError):
    """A conditioning tensor (or list) that the formulas cannot use."""


class SharpenerFileError(DiceError):
    """A sharpener file that is missing, unreadable or not a DICE sharpener."""
