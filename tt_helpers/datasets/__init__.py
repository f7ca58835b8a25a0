"""Datasets the book runs on. Each module loads one dataset family and says how its attributes are encoded."""

from .movielens import MOVIELENS_ITEM_FEATURES, MOVIELENS_USER_FEATURES, DataFileError, MovieLens, load_movielens

__all__ = ["DataFileError", "MOVIELENS_ITEM_FEATURES", "MOVIELENS_USER_FEATURES", "MovieLens", "load_movielens"]
