"""Tests for tt_helpers.datasets.movielens (the MovieLens loader). Nothing here touches the network."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import time
import zipfile

import pandas as pd
import pooch
import pytest

from tt_helpers.datasets import movielens as data
from tt_helpers.datasets.movielens import DATASETS, DataFileError, MovieLens, default_data_dir, load_movielens

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The real ml-100k: $TT_HELPERS_DATA if set when the tests start, else the shared read-only copy.
SHARED = pathlib.Path(os.environ.get("TT_HELPERS_DATA") or REPO_ROOT.parent / "shared" / "data" / "movielens")
HAVE_ML100K = all((SHARED / "ml-100k" / f).is_file() for f in DATASETS["ml-100k"]["files"])
needs_ml100k = pytest.mark.skipif(not HAVE_ML100K, reason=f"ml-100k not found in {SHARED}")
REAL_OS_CACHE = pooch.os_cache


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """No env var, a throwaway cache folder, and no downloads unless a test patches them in."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.delenv("TT_HELPERS_DATA", raising=False)
    monkeypatch.setattr(pooch, "os_cache", lambda project: cache / project)

    def no_network(*args: object, **kwargs: object) -> None:
        pytest.fail(f"unexpected download attempt: {args} {kwargs}")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    return cache / "tt_helpers"


def write(path: pathlib.Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` (creating folders), with Unix newlines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))


ML1M = {
    "ratings.dat": "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n2::661::2::978300760\n",
    "movies.dat": (
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
        "2000::Café (1999)::Comedy|Romance\n"
        '1507::"Great Performances" Cats (1998)::Musical\n'
    ),
    "users.dat": "2::M::56::16::70072\n1::F::1::10::01002\n",
}

LATEST_SMALL = {
    "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,964982224\n",
    "movies.csv": (
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        '7,"Misérables, Les (1995)",Drama|War\n'
        "4,Babylon 5,Sci-Fi\n"
        "5,Nanook of the North (1922) ,(no genres listed)\n"
    ),
}


def make_ml1m(root: pathlib.Path) -> pathlib.Path:
    """Write the tiny ml-1m fixture (latin-1) into ``root/ml-1m``."""
    for fname, text in ML1M.items():
        write(root / "ml-1m" / fname, text, encoding="latin-1")
    return root


def make_latest_small(root: pathlib.Path, toy_title: str = "Toy Story (1995)") -> pathlib.Path:
    """Write the tiny ml-latest-small fixture into ``root/ml-latest-small``."""
    for fname, text in LATEST_SMALL.items():
        write(root / "ml-latest-small" / fname, text.replace("Toy Story (1995)", toy_title))
    return root


def copy_ml100k(dest: pathlib.Path) -> pathlib.Path:
    """Copy the real ml-100k files the loader needs into ``dest/ml-100k`` (writable copies)."""
    (dest / "ml-100k").mkdir(parents=True)
    for fname in DATASETS["ml-100k"]["files"]:
        shutil.copyfile(SHARED / "ml-100k" / fname, dest / "ml-100k" / fname)
    return dest


# --- real ml-100k ----------------------------------------------------------------------------


@needs_ml100k
def test_ml100k_real() -> None:
    ml = load_movielens("ml-100k", data_dir=SHARED)
    assert isinstance(ml, MovieLens) and ml.name == "ml-100k"
    r, u, i = ml.ratings, ml.users, ml.items
    assert len(r) == 100_000 and len(u) == 943 and len(i) == 1682
    assert r.dtypes.astype(str).to_dict() == {
        "user_id": "int64", "item_id": "int64", "rating": "float32", "timestamp": "int64"
    }
    assert list(u.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert u["user_id"].dtype == "int64" and u["age"].dtype == "int64"
    assert isinstance(u["gender"].dtype, pd.CategoricalDtype) and isinstance(u["occupation"].dtype, pd.CategoricalDtype)
    assert pd.api.types.is_string_dtype(u["zip_code"])
    assert u.loc[u.user_id == 74, "zip_code"].item() == "T8H1N"
    assert list(i.columns) == ["item_id", "title", "year", "genres"]
    assert i["item_id"].dtype == "int64" and i["year"].dtype == "Int64"
    assert pd.api.types.is_string_dtype(i["title"])
    # sorted and indexed as promised
    assert r.index.equals(pd.RangeIndex(len(r))) and i.index.equals(pd.RangeIndex(len(i)))
    key = list(zip(r.timestamp, r.user_id, r.item_id))
    assert key == sorted(key)
    assert i["item_id"].is_monotonic_increasing and u["user_id"].is_monotonic_increasing
    assert set(r.rating.unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # items
    toy = i.set_index("item_id").loc[1]
    assert toy.title == "Toy Story" and toy.year == 1995
    assert toy.genres == ["Animation", "Children's", "Comedy"]
    unknown = i.set_index("item_id").loc[267]
    assert unknown.title == "unknown" and pd.isna(unknown.year) and unknown.genres == []
    assert not i.title.str.endswith(" ").any() and not i.title.str.contains(r"\(\d{4}\)$").any()
    assert i.year.isna().sum() == 1
    # GroupLens: ratings from 19 Sep 1997 to 22 Apr 1998 (US time; the first is 03:05 UTC on the 20th)
    first, last = pd.to_datetime([r.timestamp.min(), r.timestamp.max()], unit="s")
    assert pd.Timestamp("1997-09-19") <= first < pd.Timestamp("1997-09-21")
    assert pd.Timestamp("1998-04-22") <= last < pd.Timestamp("1998-04-23")


@needs_ml100k
def test_ml100k_real_is_hashed_once_then_read_from_the_md5_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    load_movielens(data_dir=SHARED)  # warm the md5 cache
    calls = []
    real_md5 = data.hashlib.md5
    monkeypatch.setattr(data.hashlib, "md5", lambda *a, **k: calls.append(a) or real_md5(*a, **k))
    load_movielens(data_dir=SHARED)
    assert calls == []  # nothing rehashed


@needs_ml100k
def test_ml100k_via_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TT_HELPERS_DATA", str(SHARED))
    assert len(load_movielens().ratings) == 100_000  # default name, and no download attempted


def test_ml100k_parser_on_tiny_fixture(tmp_path: pathlib.Path) -> None:
    """The ml-100k parser alone (the md5 check is tested separately), without the real data."""
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
              "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
              "Thriller", "War", "Western"]
    folder = tmp_path / "ml-100k"
    write(folder / "u.genre", "".join(f"{g}|{k}\n" for k, g in enumerate(genres)) + "\n")
    flags = {1: [3, 4, 5], 267: [0], 1412: [3, 4], 1128: [7]}
    item_line = {
        1: "1|Toy Story (1995)|01-Jan-1995||http://x|",
        267: "267|unknown||||",
        1412: "1412|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||http://x|",
        1128: "1128|Heidi Fleiss: Hollywood Madam (1995) |01-Jan-1995||http://x|",
    }
    lines = [item_line[k] + "|".join("1" if j in flags[k] else "0" for j in range(19)) for k in (267, 1, 1412, 1128)]
    write(folder / "u.item", "\n".join(lines) + "\n", encoding="latin-1")
    write(folder / "u.data", "2\t1\t3\t881250949\n1\t267\t5\t881250949\n")
    write(folder / "u.user", "2|53|F|other|94043\n1|24|M|technician|T8H1N\n")
    ratings, users, items = data._parse_ml100k(folder)
    assert items.item_id.tolist() == [1, 267, 1128, 1412]
    assert items.title.tolist() == [
        "Toy Story", "unknown", "Heidi Fleiss: Hollywood Madam",
        "Land Before Time III: The Time of the Great Giving (1995) (V)",
    ]
    assert items.year.tolist() == [1995, pd.NA, 1995, 1995]
    assert items.genres.tolist() == [
        ["Animation", "Children's", "Comedy"], [], ["Documentary"], ["Animation", "Children's"]
    ]
    assert users.user_id.tolist() == [1, 2] and users.zip_code.tolist() == ["T8H1N", "94043"]
    assert data._tidy_ratings(ratings).user_id.tolist() == [1, 2]  # timestamp tie broken by user_id


# --- tiny ml-1m and ml-latest-small fixtures -------------------------------------------------


def test_ml1m_fixture(tmp_path: pathlib.Path) -> None:
    ml = load_movielens("ml-1m", data_dir=make_ml1m(tmp_path), download=False)
    r = ml.ratings
    assert r.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "int64"]
    assert list(zip(r.user_id, r.item_id, r.rating, r.timestamp)) == [
        (2, 1193, 4.0, 978298413), (1, 1193, 5.0, 978300760), (2, 661, 2.0, 978300760), (1, 661, 3.0, 978302109),
    ]
    i = ml.items
    assert i.item_id.tolist() == [260, 661, 1193, 1507, 2000]
    assert i.title.tolist() == [
        "Star Wars: Episode IV - A New Hope", "James and the Giant Peach", "One Flew Over the Cuckoo's Nest",
        '"Great Performances" Cats', "Café",
    ]
    assert i.year.dtype == "Int64" and i.year.tolist() == [1977, 1996, 1975, 1998, 1999]
    assert i.genres.tolist() == [
        ["Action", "Adventure", "Fantasy", "Sci-Fi"], ["Animation", "Children's", "Musical"], ["Drama"],
        ["Musical"], ["Comedy", "Romance"],
    ]
    u = ml.users
    assert list(u.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert u.user_id.tolist() == [1, 2] and u.age.tolist() == [1, 56] and u.age.dtype == "int64"
    assert u.gender.tolist() == ["F", "M"] and isinstance(u.gender.dtype, pd.CategoricalDtype)
    assert isinstance(u.occupation.dtype, pd.CategoricalDtype) and u.occupation.tolist() == [10, 16]
    assert u.zip_code.tolist() == ["01002", "70072"]  # leading zero kept


def test_latest_small_fixture(tmp_path: pathlib.Path) -> None:
    ml = load_movielens("ml-latest-small", data_dir=make_latest_small(tmp_path), download=False)
    assert ml.users is None
    r = ml.ratings
    assert list(r.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert r.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "int64"]
    assert list(zip(r.user_id, r.item_id, r.rating)) == [(1, 3, 4.5), (2, 1, 0.5), (1, 1, 4.0)]
    i = ml.items
    assert i.item_id.tolist() == [1, 3, 4, 5, 7]
    assert i.title.tolist() == [
        "Toy Story", "American President, The", "Babylon 5", "Nanook of the North", "Misérables, Les"
    ]
    assert i.year.tolist() == [1995, 1995, pd.NA, 1922, 1995]
    assert i.genres.tolist() == [
        ["Adventure", "Animation", "Children", "Comedy", "Fantasy"], ["Comedy", "Drama", "Romance"], ["Sci-Fi"],
        [], ["Drama", "War"],
    ]


def test_unparseable_file_names_it(tmp_path: pathlib.Path) -> None:
    make_ml1m(tmp_path)
    write(tmp_path / "ml-1m" / "ratings.dat", "1::1193::five::978300760\n")
    with pytest.raises(DataFileError, match="ratings.dat"):
        load_movielens("ml-1m", data_dir=tmp_path, download=False)


def test_repr_is_short(tmp_path: pathlib.Path) -> None:
    ml = load_movielens("ml-latest-small", data_dir=make_latest_small(tmp_path), download=False)
    assert repr(ml) == "MovieLens(name='ml-latest-small', ratings=3, users=None, items=5)"
    with pytest.raises(AttributeError):
        ml.name = "other"  # type: ignore[misc]


# --- integrity and missing files -------------------------------------------------------------


@needs_ml100k
def test_corrupted_file_is_reported(tmp_path: pathlib.Path) -> None:
    copy_ml100k(tmp_path)
    path = tmp_path / "ml-100k" / "u.data"
    with path.open("ab") as fh:
        fh.write(b"\n")
    with pytest.raises(DataFileError) as info:
        load_movielens(data_dir=tmp_path)  # download=True must not try to "repair" it
    msg = str(info.value)
    assert str(path) in msg and "u.data" in msg
    assert DATASETS["ml-100k"]["md5"]["u.data"] in msg and data._md5(path) in msg
    assert f"delete {path} to re-download" in msg
    assert "unmodified copy of GroupLens' ml-100k.zip contents in" in msg and str(tmp_path / "ml-100k") in msg


@needs_ml100k
def test_change_after_first_load_is_caught(tmp_path: pathlib.Path) -> None:
    copy_ml100k(tmp_path)
    assert len(load_movielens(data_dir=tmp_path).items) == 1682
    path = tmp_path / "ml-100k" / "u.item"
    path.write_bytes(path.read_bytes().replace(b"Toy Story", b"Toy Storz"))  # same size, new mtime
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(DataFileError, match="u.item"):
        load_movielens(data_dir=tmp_path)


def test_missing_file_without_download(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataFileError) as info:
        load_movielens("ml-100k", data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert "u.data" in msg and str(tmp_path / "ml-100k") in msg
    assert "TT_HELPERS_DATA" in msg and "data_dir" in msg and DATASETS["ml-100k"]["url"] in msg
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="ml-100k, ml-1m, ml-latest-small"):
        load_movielens("ml-10m")


def test_datasets_table() -> None:
    assert set(DATASETS) == {"ml-100k", "ml-1m", "ml-latest-small"}
    for name, spec in DATASETS.items():
        assert spec["url"] == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert spec["zip"] == f"{name}.zip" and spec["folder"] == name and spec["files"]
        assert spec["zip_hash"].split(":")[0] in {"md5", "sha256"}
    assert set(DATASETS["ml-100k"]["files"]) <= set(DATASETS["ml-100k"]["md5"])


# --- downloading (always faked) --------------------------------------------------------------


def fake_retrieve(source: pathlib.Path, calls: list[dict]):
    """A stand-in for pooch.retrieve that zips ``source/<folder>`` into ``path/fname``."""

    def retrieve(url: str, known_hash: str | None, fname: str, path: os.PathLike, **kwargs: object) -> str:
        calls.append({"url": url, "known_hash": known_hash, "fname": fname, "path": pathlib.Path(path)})
        target = pathlib.Path(path) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = fname.removesuffix(".zip")
        with zipfile.ZipFile(target, "w") as zf:
            for f in sorted((source / folder).iterdir()):
                zf.write(f, f"{folder}/{f.name}")
        return str(target)

    return retrieve


def test_download_unpacks_into_data_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, dest = make_ml1m(tmp_path / "src"), tmp_path / "new" / "dir"
    calls: list[dict] = []
    monkeypatch.setattr(pooch, "retrieve", fake_retrieve(source, calls))
    ml = load_movielens("ml-1m", data_dir=dest)
    assert calls == [{"url": DATASETS["ml-1m"]["url"], "known_hash": DATASETS["ml-1m"]["zip_hash"],
                      "fname": "ml-1m.zip", "path": dest}]
    assert (dest / "ml-1m" / "ratings.dat").is_file() and len(ml.ratings) == 4
    load_movielens("ml-1m", data_dir=dest)
    assert len(calls) == 1  # second load finds the files


def test_download_failure_is_wrapped(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(DataFileError) as info:
        load_movielens("ml-100k", data_dir=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert "could not download" in msg and DATASETS["ml-100k"]["url"] in msg and "ConnectionError" in msg
    assert "u.data" in msg and str(tmp_path / "ml-100k") in msg and "TT_HELPERS_DATA" in msg


def test_download_hash_mismatch_is_wrapped(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_hash(*args: object, **kwargs: object) -> None:
        raise ValueError("MD5 hash of downloaded file (ml-1m.zip) does not match the known hash")

    monkeypatch.setattr(pooch, "retrieve", bad_hash)
    with pytest.raises(DataFileError, match="ml-1m.zip does not match the known hash") as info:
        load_movielens("ml-1m", data_dir=tmp_path)
    assert isinstance(info.value.__cause__, ValueError)


def test_zip_without_the_files(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "src"
    write(source / "ml-1m" / "README", "nothing here\n")
    monkeypatch.setattr(pooch, "retrieve", fake_retrieve(source, []))
    with pytest.raises(DataFileError, match="did not contain ratings.dat, movies.dat, users.dat"):
        load_movielens("ml-1m", data_dir=tmp_path / "dest")


@pytest.mark.parametrize("subdir", ["", "not/yet/there"])
def test_read_only_dir_is_never_written(tmp_path: pathlib.Path, subdir: str) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        with pytest.raises(DataFileError, match="read-only") as info:  # the autouse fixture fails on download
            load_movielens("ml-100k", data_dir=ro / subdir)
        assert "u.data" in str(info.value) and "TT_HELPERS_DATA" in str(info.value)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(stat.S_IRWXU)


# --- where files are looked for --------------------------------------------------------------


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, hermetic: pathlib.Path) -> None:
    assert default_data_dir() == hermetic  # pooch.os_cache("tt_helpers"), patched by the fixture
    monkeypatch.setenv("TT_HELPERS_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    real = pathlib.Path(REAL_OS_CACHE("tt_helpers"))
    assert real.name == "tt_helpers" and pathlib.Path.home() in real.parents


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, hermetic: pathlib.Path) -> None:
    explicit = make_latest_small(tmp_path / "explicit", "From Data Dir (2001)")
    env = make_latest_small(tmp_path / "env", "From Env (2002)")
    make_latest_small(hermetic, "From Cache (2003)")

    def toy_title(**kwargs: object) -> str:
        return load_movielens("ml-latest-small", download=False, **kwargs).items.title[0]

    assert toy_title() == "From Cache"
    monkeypatch.setenv("TT_HELPERS_DATA", str(env))
    assert toy_title() == "From Env"
    assert toy_title(data_dir=explicit) == "From Data Dir"
    assert toy_title(data_dir=str(explicit)) == "From Data Dir"  # str paths work too
