#!/usr/bin/env python3
"""Notebook hygiene that keeps outputs: the chapters are committed executed, and nbval compares every cell's
stored output with a fresh run, so outputs and execution counts must stay (no nbstripout).

Checks each notebook (default: notebooks/*.ipynb) and exits 1 if any check fails:
  * it is executed: every non-empty code cell has an execution count, the counts run 1, 2, 3, ... top to
    bottom (one run in a fresh kernel), and the notebook has outputs;
  * no error outputs, except in cells tagged ``raises-exception`` (nbval expects those to raise);
  * no output text that varies between machines or runs or leaks the author's machine: memory addresses
    (``<... at 0x7f...>``), temporary files (``/tmp/...``, ``ipykernel_123/...``), home folders, ``site-packages``
    or the repository's own absolute path.

Volatile metadata (nbclient's per-cell execution timestamps, UI state such as ``collapsed``/``scrolled``, and
widget state) is reported as a note, not a failure. ``--strip-volatile`` removes it in place and changes
nothing else: sources, outputs and execution counts stay byte for byte. The pre-commit hook and ``make lint``
only check; they never rewrite a notebook.

Standard library only, so that it runs as a pre-commit hook without dependencies.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Output text that must not be committed: (name, pattern, advice).
PATTERNS: list[tuple[str, re.Pattern[str], str]] = [
    (
        "memory address",
        re.compile(r"\b0x[0-9a-fA-F]{6,}\b"),
        "assign the result (e.g. `ax = plot(...)`) or print a summary instead of a repr",
    ),
    (
        "temporary path",
        re.compile(r"/tmp/|ipykernel_\d+|/var/folders/|\\AppData\\Local\\Temp"),
        "do not print temporary file names",
    ),
    (
        "home folder",
        re.compile(r"/home/[^/\s'\"]+/|/Users/[^/\s'\"]+/|/root/|[A-Z]:\\Users\\"),
        "print paths relative to the data folder or the repository",
    ),
    (
        "installation path",
        re.compile(r"site-packages|dist-packages"),
        "silence or avoid the warning that prints an installation path",
    ),
]
TEXT_MIMETYPES = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")
VOLATILE_NOTEBOOK_METADATA = ("widgets",)


def _text(value) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def _output_texts(output: dict) -> list[str]:
    kind = output.get("output_type")
    if kind == "stream":
        return [_text(output.get("text", ""))]
    if kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        return [_text(data[m]) for m in TEXT_MIMETYPES if m in data]
    if kind == "error":
        return [_text(output.get("traceback", [])), _text(output.get("evalue", ""))]
    return []


def check_notebook(path: pathlib.Path, root: pathlib.Path = ROOT) -> tuple[list[str], list[str]]:
    """(errors, notes) for one notebook; each message starts with ``path`` and, where it applies, the cell."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return [f"{path}: not a readable notebook ({err})"], []
    if nb.get("nbformat") != 4:
        return [f"{path}: nbformat {nb.get('nbformat')!r}, expected 4"], []
    errors: list[str] = []
    notes: list[str] = []
    home = str(pathlib.Path.home())
    local = [str(root)] + ([home] if home not in ("/", "") else [])
    cells = nb.get("cells", [])
    code = [c for c in cells if c.get("cell_type") == "code" and _text(c.get("source", "")).strip()]
    if code and all(c.get("execution_count") is None for c in code):
        return [
            f"{path}: not executed ({len(code)} code cells, no execution count, no outputs): execute it "
            "top to bottom in a fresh kernel and save it with its outputs (see README.md)"
        ], []
    expected_count = 1
    n_outputs = 0
    n_code = 0
    volatile: set[str] = set()
    for index, cell in enumerate(cells, start=1):
        where = f"{path}: cell {index}"
        volatile.update(k for k in cell.get("metadata", {}) if k in VOLATILE_CELL_METADATA)
        if cell.get("cell_type") != "code":
            continue
        source = _text(cell.get("source", ""))
        count = cell.get("execution_count")
        outputs = cell.get("outputs", [])
        n_outputs += len(outputs)
        if not source.strip():
            continue
        n_code += 1
        if count is None:
            errors.append(f"{where}: not executed (execution_count is null); re-execute the notebook and save it")
        elif count != expected_count:
            errors.append(
                f"{where}: execution count {count}, expected {expected_count}: re-execute top to bottom in a "
                "fresh kernel"
            )
        if count is not None:
            expected_count = count + 1
        tags = cell.get("metadata", {}).get("tags", [])
        for output in outputs:
            if output.get("output_type") == "error" and "raises-exception" not in tags:
                errors.append(f"{where}: error output ({output.get('ename')}: {output.get('evalue')})")
            for text in _output_texts(output):
                for name, pattern, advice in PATTERNS:
                    match = pattern.search(text)
                    if match:
                        errors.append(f"{where}: output contains a {name} ({match.group(0)!r}): {advice}")
                for prefix in local:
                    if prefix and prefix in text:
                        errors.append(f"{where}: output contains the local path {prefix!r}")
    if n_code and not n_outputs:
        errors.append(f"{path}: no outputs at all: commit the notebook executed, with its outputs (nbval needs them)")
    volatile.update(k for k in nb.get("metadata", {}) if k in VOLATILE_NOTEBOOK_METADATA)
    if volatile:
        notes.append(
            f"{path}: volatile metadata ({', '.join(sorted(volatile))}); "
            f"`python tools/check_notebooks.py --strip-volatile {path}` removes it and keeps the outputs"
        )
    return errors, notes


def strip_volatile(path: pathlib.Path) -> bool:
    """Remove volatile metadata in place (outputs, execution counts and sources untouched); True if changed."""
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    changed = False
    for cell in nb.get("cells", []):
        metadata = cell.get("metadata", {})
        for key in VOLATILE_CELL_METADATA:
            if key in metadata:
                del metadata[key]
                changed = True
    for key in VOLATILE_NOTEBOOK_METADATA:
        if key in nb.get("metadata", {}):
            del nb["metadata"][key]
            changed = True
    if changed:
        # nbformat's own layout (indent 1, sorted keys, UTF-8 as is, final newline), so that only the
        # removed keys show up in the diff.
        path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def _display(path: pathlib.Path) -> pathlib.Path:
    """``path`` relative to the current folder when it is below it (shorter messages)."""
    try:
        return path.resolve().relative_to(pathlib.Path.cwd())
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=pathlib.Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument(
        "--strip-volatile", action="store_true", help="remove volatile metadata in place, keeping outputs"
    )
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    paths = [_display(p) for p in paths if p.suffix == ".ipynb"]
    if args.strip_volatile:
        for path in paths:
            if strip_volatile(path):
                print(f"{path}: volatile metadata removed")
    failed = False
    for path in paths:
        errors, notes = check_notebook(path)
        for message in notes:
            print(f"note: {message}")
        for message in errors:
            print(message, file=sys.stderr)
        failed = failed or bool(errors)
    if failed:
        print("notebook hygiene: FAILED (see above)", file=sys.stderr)
        return 1
    print(f"notebook hygiene: {len(paths)} notebook(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
