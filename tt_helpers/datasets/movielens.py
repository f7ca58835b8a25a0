"""MovieLens loader: find (or download) GroupLens' files, verify them, parse them into tidy frames.

Files are looked up in ``<dir>/<name>/`` where ``<dir>`` is the ``data_dir`` argument, else the
environment variable ``TT_HELPERS_DATA``, else a per-user cache folder (``pooch.os_cache``).

Integrity: for ml-100k every file the loader reads is checked against its known md5 sum.
ml-1m and ml-latest-small have no published per-file sums, so their unpacked files are checked
for presence and parseability only; their zip archives are checked against known hashes when
downloaded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import pathlib
import stat
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..features import FeatureSpec


def _pooch():
    """Import pooch only when needed, silencing the warning its import of ``tqdm.auto`` prints in Jupyter
    kernels without ipywidgets: it would become part of a chapter's output on some machines only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import pooch
    return pooch


ENV_VAR = "TT_HELPERS_DATA"
BASE_URL = "https://files.grouplens.org/datasets/movielens/"

DATASETS: dict[str, dict[str, Any]] = {
    "ml-100k": {
        "url": BASE_URL + "ml-100k.zip",
        "zip": "ml-100k.zip",
        "folder": "ml-100k",
        "files": ("u.data", "u.item", "u.user", "u.genre"),
        "zip_hash": "md5:0e33842e24a9c977be4e0107933c0723",
        "md5": {
            "u.data": "6e47046882bad158b0efbb84cd5cb987",
            "u.genre": "a7578bdb37758741ae9429d2c736af18",
            "u.item": "c9e7f390115d79079537301d5204f3f7",
            "u.occupation": "035abaa2165f35cebce4b91e03481e0a",
            "u.user": "1b53539edc13caad0282c8500608a319",
        },
    },
    "ml-1m": {
        "url": BASE_URL + "ml-1m.zip",
        "zip": "ml-1m.zip",
        "folder": "ml-1m",
        "files": ("ratings.dat", "movies.dat", "users.dat"),
        "zip_hash": "md5:c4d9eecfca2ab87c1945afe126590906",
        "md5": {},
    },
    "ml-latest-small": {
        "url": BASE_URL + "ml-latest-small.zip",
        "zip": "ml-latest-small.zip",
        "folder": "ml-latest-small",
        "files": ("ratings.csv", "movies.csv"),
        # The 2018-09-26 release (610 users, 9,742 movies, 100,836 ratings).
        "zip_hash": "sha256:696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        "md5": {},
    },
}

_NO_GENRE = frozenset({"unknown", "(no genres listed)"})
_TITLE_YEAR = r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$"
_RATING_DTYPES = {"user_id": "int64", "item_id": "int64", "rating": "float32", "timestamp": "int64"}
_RATING_COLS = list(_RATING_DTYPES)

# (resolved path, mtime_ns, size) -> md5 hex digest; each file is hashed once per process.
_MD5_CACHE: dict[tuple[str, int, int], str] = {}


class DataFileError(RuntimeError):
    """A data file is missing, corrupt or unreadable; the message names the file and the fix."""


@dataclass(frozen=True, eq=False)
class MovieLens:
    """One MovieLens release as pandas frames (see ``load_movielens`` for the columns)."""

    name: str
    ratings: pd.DataFrame
    users: pd.DataFrame | None
    items: pd.DataFrame

    def __repr__(self) -> str:
        users = "None" if self.users is None else f"{len(self.users):,}"
        return (
            f"MovieLens(name={self.name!r}, ratings={len(self.ratings):,}, "
            f"users={users}, items={len(self.items):,})"
        )


def default_data_dir() -> pathlib.Path:
    """``$TT_HELPERS_DATA`` if set, else the per-user cache folder ``pooch.os_cache('tt_helpers')``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path(_pooch().os_cache("tt_helpers"))


def load_movielens(
    name: str = "ml-100k",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> MovieLens:
    """Load MovieLens ``name`` ("ml-100k", "ml-1m" or "ml-latest-small").

    Looks in ``<data_dir>/<name>/`` (default: ``default_data_dir()``); if files are missing and
    ``download`` is true, downloads GroupLens' zip there. Raises ``DataFileError`` for missing,
    corrupt or unparseable files, ``ValueError`` for an unknown ``name``.

    ratings: user_id, item_id (int64), rating (float32), timestamp (int64, unix seconds),
    sorted by (timestamp, user_id, item_id). users: user_id, age (int64), gender, occupation
    (category), zip_code (string); None for ml-latest-small. items: item_id (int64), title (without
    the trailing " (yyyy)"), year (Int64, may be <NA>), genres (list of str, maybe empty).
    ml-100k files are md5-verified; ml-1m and ml-latest-small files are checked for presence and
    parseability only (their zips are hash-checked on download).
    """
    spec = _spec(name)
    root = pathlib.Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder = _ensure_files(name, spec, root, download)
    _verify(name, spec, folder)
    ratings, users, items = _PARSERS[name](folder)
    return MovieLens(name=name, ratings=_tidy_ratings(ratings), users=users, items=items)


# --- locating, downloading, verifying -------------------------------------------------------


def _spec(name: str) -> dict[str, Any]:
    """The ``DATASETS`` entry for ``name``; ValueError listing the known names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown MovieLens dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def _missing(spec: dict[str, Any], folder: pathlib.Path) -> list[str]:
    """Names of the needed files that are not in ``folder``."""
    return [f for f in spec["files"] if not (folder / f).is_file()]


def _how_to_fix(name: str, spec: dict[str, Any], root: pathlib.Path) -> str:
    """The standard advice for getting the files in place."""
    return (
        f"Fix: pass data_dir= or set {ENV_VAR} to a folder that holds '{spec['folder']}/', "
        f"or download {spec['url']} manually and unzip it in {root} "
        f"(so that {root / spec['folder'] / spec['files'][0]} exists)."
    )


def _ensure_files(name: str, spec: dict[str, Any], root: pathlib.Path, download: bool) -> pathlib.Path:
    """Return ``root/<folder>`` once every needed file is there, downloading if allowed."""
    folder = root / spec["folder"]
    missing = _missing(spec, folder)
    if not missing:
        return folder
    where = f"MovieLens {name}: missing {', '.join(missing)} in {folder}."
    if not download:
        raise DataFileError(f"{where} Downloading is off (download=False). {_how_to_fix(name, spec, root)}")
    _check_writable(root, where + " " + _how_to_fix(name, spec, root))
    zip_path = _download(name, spec, root)
    _unzip(zip_path, root, spec["folder"])
    missing = _missing(spec, folder)
    if missing:
        raise DataFileError(
            f"MovieLens {name}: {zip_path} did not contain {', '.join(missing)} under "
            f"'{spec['folder']}/'. Delete {zip_path} to re-download. {_how_to_fix(name, spec, root)}"
        )
    return folder


def _is_writable(path: pathlib.Path) -> bool:
    """True if ``path`` allows writing (by permission bits too, so read-only stays so for root)."""
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return os.access(path, os.W_OK | os.X_OK) and bool(path.stat().st_mode & write_bits)


def _check_writable(root: pathlib.Path, context: str) -> None:
    """Raise DataFileError if a download would have to write into a read-only folder."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not _is_writable(existing):
        raise DataFileError(f"{context} Cannot download: {existing} is read-only (or not a folder).")


def _download(name: str, spec: dict[str, Any], root: pathlib.Path) -> pathlib.Path:
    """Fetch the zip into ``root`` with pooch; wrap network and hash failures in DataFileError."""
    pooch = _pooch()
    try:
        path = pooch.retrieve(
            spec["url"], known_hash=spec["zip_hash"], fname=spec["zip"], path=root, progressbar=False
        )
    except ValueError as err:  # pooch's hash mismatch
        raise DataFileError(
            f"MovieLens {name}: the downloaded {spec['zip']} does not match the known hash "
            f"{spec['zip_hash']} ({err}). GroupLens may have changed the archive or the download was "
            f"corrupted; retry later. {_how_to_fix(name, spec, root)}"
        ) from err
    except Exception as err:  # network errors from requests, OSError writing, ...
        raise DataFileError(
            f"MovieLens {name}: could not download {spec['url']} into {root} "
            f"({type(err).__name__}: {err}). Files needed: {', '.join(spec['files'])} in "
            f"{root / spec['folder']}. {_how_to_fix(name, spec, root)}"
        ) from err
    return pathlib.Path(path)


def _unzip(zip_path: pathlib.Path, root: pathlib.Path, folder: str) -> None:
    """Extract the members under ``folder/`` of ``zip_path`` into ``root``."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = [m for m in zf.namelist() if m.startswith(folder + "/")]
            zf.extractall(root, members=members)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataFileError(
            f"could not unzip {zip_path} into {root} ({err}); delete {zip_path} to re-download."
        ) from err


def _md5(path: pathlib.Path) -> str:
    """md5 hex digest of ``path``, cached by (path, mtime, size) for the life of the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _MD5_CACHE:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _MD5_CACHE[key] = digest.hexdigest()
    return _MD5_CACHE[key]


def _verify(name: str, spec: dict[str, Any], folder: pathlib.Path) -> None:
    """Check the md5 of every needed file that has a known sum."""
    for fname in spec["files"]:
        expected = spec["md5"].get(fname)
        if expected is None:
            continue
        path = folder / fname
        actual = _md5(path)
        if actual != expected:
            raise DataFileError(
                f"MovieLens {name}: {path} is corrupt or modified: md5 {actual}, expected {expected}. "
                f"Fix: delete {path} to re-download, or put an unmodified copy of GroupLens' "
                f"{spec['zip']} contents in {folder}/ (or point data_dir / {ENV_VAR} at another copy)."
            )


# --- parsing ----------------------------------------------------------------------------------


def _read(path: pathlib.Path | io.StringIO, source: pathlib.Path | None = None, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` that turns parse failures into a DataFileError naming the file."""
    source = source if source is not None else path
    try:
        return pd.read_csv(path, **kwargs)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, OSError) as err:
        raise DataFileError(
            f"could not parse {source} ({type(err).__name__}: {err}). The file is damaged or not "
            f"GroupLens' original; delete {source} to re-download, or replace it with an unmodified copy."
        ) from err


def _require(frame: pd.DataFrame, columns: list[str], path: pathlib.Path) -> None:
    """DataFileError if ``frame`` (read from ``path``) lacks any of ``columns``."""
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DataFileError(f"{path} lacks the column(s) {', '.join(absent)}; replace it with GroupLens' original.")


def _read_double_colon(path: pathlib.Path, names: list[str], dtype: dict[str, Any]) -> pd.DataFrame:
    """Read a ``::``-separated latin-1 file with the fast C parser (``::`` becomes a tab first)."""
    try:
        text = path.read_text(encoding="latin-1").replace("::", "\t")
    except OSError as err:
        raise DataFileError(f"could not read {path} ({err}).") from err
    return _read(io.StringIO(text), source=path, sep="\t", header=None, names=names, dtype=dtype,
                 quoting=csv.QUOTE_NONE, index_col=False)


def _split_title(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split "Title (1995)" into ("Title", 1995); titles without a trailing year keep <NA>."""
    parts = titles.str.extract(_TITLE_YEAR)
    title = parts["title"].where(parts["title"].notna(), titles.str.strip())
    return title, pd.to_numeric(parts["year"]).astype("Int64")


def _genre_lists(genres: pd.Series) -> list[list[str]]:
    """``"A|B"`` strings to lists, dropping "unknown" / "(no genres listed)"."""
    return [[g for g in s.split("|") if g not in _NO_GENRE] for s in genres.fillna("")]


def _tidy_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """Fixed columns and dtypes, sorted by (timestamp, user_id, item_id), index reset."""
    ratings = ratings[_RATING_COLS].astype(_RATING_DTYPES)
    return ratings.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def _items_frame(
    ids: pd.Series, titles: pd.Series, genres: list[list[str]], fallback_year: pd.Series | None = None
) -> pd.DataFrame:
    """Assemble the items frame (year from the title, else ``fallback_year``), sorted by item_id."""
    title, year = _split_title(titles)
    if fallback_year is not None:
        year = year.fillna(fallback_year)
    items = pd.DataFrame({"item_id": ids.astype("int64"), "title": title, "year": year.astype("Int64")})
    items["genres"] = pd.Series(genres, index=items.index, dtype=object)
    return items.sort_values("item_id", kind="stable").reset_index(drop=True)


def _tidy_users(users: pd.DataFrame) -> pd.DataFrame:
    """Fixed column order, sorted by user_id, index reset."""
    users = users[["user_id", "age", "gender", "occupation", "zip_code"]]
    return users.sort_values("user_id", kind="stable").reset_index(drop=True)


_USER_DTYPES = {"user_id": "int64", "age": "int64", "gender": "category", "zip_code": "string"}


def _parse_ml100k(folder: pathlib.Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Parse u.data, u.genre, u.item and u.user (``|``-separated, latin-1)."""
    ratings = _read(folder / "u.data", sep="\t", header=None, names=_RATING_COLS, dtype=_RATING_DTYPES,
                    index_col=False)
    genre_table = _read(folder / "u.genre", sep="|", header=None, names=["genre", "code"],
                        dtype={"genre": str, "code": "int64"}, encoding="latin-1")
    genre_names = genre_table.sort_values("code")["genre"].tolist()
    cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *genre_names]
    dtype = {"item_id": "int64", "title": str, "release_date": str, **dict.fromkeys(genre_names, "int8")}
    raw = _read(folder / "u.item", sep="|", header=None, names=cols, dtype=dtype, encoding="latin-1",
                quoting=csv.QUOTE_NONE, index_col=False)
    flags = raw[genre_names].to_numpy(dtype=bool).tolist()
    genres = [[g for g, on in zip(genre_names, row) if on and g not in _NO_GENRE] for row in flags]
    release_year = pd.to_numeric(raw["release_date"].str.extract(r"(\d{4})\s*$")[0]).astype("Int64")
    items = _items_frame(raw["item_id"], raw["title"].fillna(""), genres, release_year)
    users = _read(folder / "u.user", sep="|", header=None, names=["user_id", "age", "gender", "occupation", "zip_code"],
                  dtype={**_USER_DTYPES, "occupation": "category"}, encoding="latin-1", index_col=False)
    return ratings, _tidy_users(users), items


def _parse_ml1m(folder: pathlib.Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Parse ratings.dat, movies.dat and users.dat (``::``-separated, latin-1)."""
    ratings = _read_double_colon(folder / "ratings.dat", _RATING_COLS, _RATING_DTYPES)
    movies = _read_double_colon(folder / "movies.dat", ["item_id", "title", "genres"],
                                {"item_id": "int64", "title": str, "genres": str})
    items = _items_frame(movies["item_id"], movies["title"], _genre_lists(movies["genres"]))
    users = _read_double_colon(folder / "users.dat", ["user_id", "gender", "age", "occupation", "zip_code"],
                               {**_USER_DTYPES, "occupation": "int64"})
    users["occupation"] = users["occupation"].astype("category")
    return ratings, _tidy_users(users), items


def _parse_latest_small(folder: pathlib.Path) -> tuple[pd.DataFrame, None, pd.DataFrame]:
    """Parse ratings.csv and movies.csv (UTF-8 CSV with header); there is no users file."""
    path = folder / "ratings.csv"
    dtype = {"userId": "int64", "movieId": "int64", "rating": "float32", "timestamp": "int64"}
    ratings = _read(path, dtype=dtype, encoding="utf-8")
    _require(ratings, list(dtype), path)
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    path = folder / "movies.csv"
    movies = _read(path, dtype={"movieId": "int64", "title": str, "genres": str}, encoding="utf-8")
    _require(movies, ["movieId", "title", "genres"], path)
    items = _items_frame(movies["movieId"], movies["title"], _genre_lists(movies["genres"]))
    return ratings, None, items


_PARSERS: dict[str, Callable[[pathlib.Path], tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]]] = {
    "ml-100k": _parse_ml100k,
    "ml-1m": _parse_ml1m,
    "ml-latest-small": _parse_latest_small,
}

__all__ = ["DATASETS", "DataFileError", "MovieLens", "default_data_dir", "load_movielens"]


# How the book encodes MovieLens' user and item attributes (chapter 2); readers' own data use their own specs
# (or the detection of tt_helpers.recipe).
MOVIELENS_USER_FEATURES = (
    FeatureSpec("user_id", "user_id", "id"),
    FeatureSpec("age", "age", "buckets", boundaries=(18, 25, 35, 45, 50, 56)),
    FeatureSpec("gender", "gender", "categorical"),
    FeatureSpec("occupation", "occupation", "categorical"),
    FeatureSpec("zip_code", "zip_code", "hashed", buckets=1000),
)
MOVIELENS_ITEM_FEATURES = (
    FeatureSpec("item_id", "item_id", "id"),
    FeatureSpec("genres", "genres", "bag"),
    FeatureSpec("year", "year", "buckets", boundaries=(1940, 1960, 1970, 1980, 1985, 1990, 1993, 1995, 1996, 1997)),
    FeatureSpec("title", "title", "tokens", buckets=2000),
)
