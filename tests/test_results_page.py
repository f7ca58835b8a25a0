"""The "results at a glance" page quotes numbers from the executed chapters: every one must be printed there."""

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "results.md"
CHAPTER = re.compile(r"\{doc\}`/notebooks/(\w+)`")
NUMBER = re.compile(r"(?<![\w.])[+-]?(\d+\.\d{3,4})(?![\d])")


def notebook_output_text(name: str) -> str:
    notebook = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    texts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            texts.append("".join(output.get("text", "")))
            for kind in ("text/plain", "text/html"):
                texts.append("".join(output.get("data", {}).get(kind, "")))
    return "\n".join(texts)


def sections() -> list[tuple[str, str]]:
    """(notebook name, the page's text about it): the text from one chapter link to the next section."""
    found = []
    for section in re.split(r"\n## ", PAGE.read_text(encoding="utf-8")):
        chapters = CHAPTER.findall(section)
        if chapters:
            found.append((chapters[0], section))
    return found


def test_every_number_on_the_page_is_printed_by_its_chapter():
    checked = 0
    for name, text in sections():
        printed = notebook_output_text(name)
        missing = [n for n in NUMBER.findall(text) if n not in printed]
        assert not missing, f"results.md quotes {missing} for {name}, which its outputs do not print"
        checked += len(NUMBER.findall(text))
    assert checked > 50  # the page really quotes the chapters


def test_every_chapter_has_a_section():
    names = {name for name, _ in sections()}
    chapters = {p.stem for p in (ROOT / "notebooks").glob("0*.ipynb")}
    assert names == chapters
