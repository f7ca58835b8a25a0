"""tt_helpers: the package behind the book "Two Towers"."""

__version__ = "0.1.0"
