"""tools/check_notebooks.py: the output-preserving notebook hygiene check of `make lint` and pre-commit."""

import importlib.util
import json
import pathlib

import pytest

TOOL = pathlib.Path(__file__).resolve().parent.parent / "tools" / "check_notebooks.py"
spec = importlib.util.spec_from_file_location("check_notebooks", TOOL)
check_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_notebooks)


def code_cell(count, source="x = 1", outputs=(), **metadata):
    return {
        "cell_type": "code",
        "execution_count": count,
        "metadata": dict(metadata),
        "outputs": list(outputs),
        "source": source,
    }


def stream(text):
    return {"name": "stdout", "output_type": "stream", "text": [text]}


def write(tmp_path, cells, **metadata):
    nb = {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def errors_of(path):
    errors, _ = check_notebooks.check_notebook(path, root=pathlib.Path("/nonexistent/repo"))
    return errors


def test_an_executed_notebook_passes(tmp_path):
    markdown = {"cell_type": "markdown", "metadata": {}, "source": "# Title"}
    cells = [markdown, code_cell(1), code_cell(None, source="  "), code_cell(2, "print(3)", [stream("3\n")])]
    assert errors_of(write(tmp_path, cells)) == []


def test_an_unexecuted_notebook_fails_with_one_message(tmp_path):
    errors = errors_of(write(tmp_path, [code_cell(None), code_cell(None)]))
    assert len(errors) == 1 and "not executed" in errors[0]


@pytest.mark.parametrize("counts", [(1, 3), (2, 3), (1, None)])
def test_counts_must_run_from_one_without_gaps(tmp_path, counts):
    cells = [code_cell(c, outputs=[stream("x\n")]) for c in counts]
    assert any("execution count" in e or "not executed" in e for e in errors_of(write(tmp_path, cells)))


def test_a_notebook_without_any_output_fails(tmp_path):
    assert any("no outputs" in e for e in errors_of(write(tmp_path, [code_cell(1), code_cell(2)])))


@pytest.mark.parametrize(
    "text, kind",
    [
        ("<Axes: > <matplotlib.lines.Line2D at 0x7f3a2c1d5e90>", "memory address"),
        ("/tmp/ipykernel_123/456.py:3: UserWarning", "temporary path"),
        ("/home/alice/two-towers/data", "home folder"),
        ("/opt/venv/lib/python3.11/site-packages/torch/nn/x.py:1: Warning", "installation path"),
    ],
)
def test_machine_specific_output_fails(tmp_path, text, kind):
    errors = errors_of(write(tmp_path, [code_cell(1, outputs=[stream(text)])]))
    assert any(kind in e for e in errors), errors


def test_a_figure_size_is_not_a_memory_address(tmp_path):
    figure = {"output_type": "display_data", "data": {"text/plain": ["<Figure size 1000x400 with 2 Axes>"]}}
    assert errors_of(write(tmp_path, [code_cell(1, outputs=[figure])])) == []


def test_error_outputs_fail_unless_the_cell_expects_them(tmp_path):
    error = {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": ["ValueError: bad"]}
    assert any("error output" in e for e in errors_of(write(tmp_path, [code_cell(1, outputs=[error])])))
    tagged = code_cell(1, outputs=[error], tags=["raises-exception"])
    assert errors_of(write(tmp_path, [tagged])) == []


def test_strip_volatile_keeps_outputs_and_counts(tmp_path):
    timing = {"iopub.status.busy": "2026-12-01T09:46:43.997992Z"}
    cells = [code_cell(1, "print(1)", [stream("1\n")], execution=timing, tags=["keep"]), code_cell(2, collapsed=True)]
    path = write(tmp_path, cells, widgets={"state": {}}, kernelspec={"name": "python3"})
    errors, notes = check_notebooks.check_notebook(path)
    assert errors == [] and len(notes) == 1 and "volatile" in notes[0]
    before = json.loads(path.read_text(encoding="utf-8"))
    assert check_notebooks.strip_volatile(path)
    after = json.loads(path.read_text(encoding="utf-8"))
    assert [c["metadata"] for c in after["cells"]] == [{"tags": ["keep"]}, {}]
    assert after["metadata"] == {"kernelspec": {"name": "python3"}}
    for old, new in zip(before["cells"], after["cells"]):
        assert (old["source"], old["outputs"], old["execution_count"]) == (
            new["source"],
            new["outputs"],
            new["execution_count"],
        )
    assert check_notebooks.check_notebook(path)[1] == []
    assert not check_notebooks.strip_volatile(path)  # nothing left to remove: the file is not rewritten
