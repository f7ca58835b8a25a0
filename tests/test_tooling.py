"""The repository's tooling agrees with itself: pins, workflows, Binder, and the repository's address."""

import os
import pathlib
import re
import urllib.parse

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def pins(path: pathlib.Path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def repository() -> tuple[str, str]:
    """(owner/name, branch) from _config.yml."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    url = config["repository"]["url"]
    return urllib.parse.urlsplit(url).path.strip("/"), config["repository"]["branch"]


def test_pre_commit_hooks_use_the_versions_of_requirements_dev():
    dev = pins(ROOT / "requirements-dev.txt")
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    for tool in ("ruff", "codespell"):
        assert hooks[tool]["additional_dependencies"] == [f"{tool}=={dev[tool]}"]


def test_no_pre_commit_hook_rewrites_files():
    text = (ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    assert not any(re.search(r"--fix\b|\bformat\b|--write|--strip|nbstripout", e) for e in entries), entries


def test_readme_names_the_repository_of_config_yml():
    repo, branch = repository()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = re.findall(r"(?:github\.com/|colab\.research\.google\.com/github/)([\w.-]+/[\w-]+)", readme)
    assert named, "README.md has no Colab line"
    assert set(named) == {repo}, named
    assert f"git+https://github.com/{repo}@{branch}" in readme
    assert f"colab.research.google.com/github/{repo}/blob/{branch}/notebooks/" in readme


def test_every_chapter_installs_the_package_on_colab_only():
    """The first code cell of each chapter installs tt_helpers from the repository of _config.yml, inside an
    `if "google.colab" in sys.modules` guard: elsewhere it prints nothing, so nbval compares no output."""
    import json

    repo, branch = repository()
    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        first = next(c for c in cells if c["cell_type"] == "code")
        source = "".join(first["source"])
        assert 'if "google.colab" in sys.modules:' in source, path.name
        assert f'%pip install -q "tt_helpers @ git+https://github.com/{repo}@{branch}"' in source, path.name
        assert first["outputs"] == [], path.name


def test_binder_installs_the_cpu_build_of_the_pinned_torch_and_the_package():
    torch = pins(ROOT / "requirements.txt")["torch"]
    binder = (ROOT / "binder" / "requirements.txt").read_text(encoding="utf-8")
    assert f"torch=={torch}+cpu" in binder
    assert "download.pytorch.org/whl/cpu" in binder and "-r ../requirements.txt" in binder
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    assert "pip install" in post_build.read_text(encoding="utf-8") and "-e ." in post_build.read_text()
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow(path):
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert workflow["permissions"] == {"contents": "read"}, "least privilege by default"
    targets = make_targets()
    for job in workflow["jobs"].values():
        assert "timeout-minutes" in job, f"{path.name}: every job has a time limit"
        scripts = []
        for step in job.get("steps", []):
            if "uses" in step:
                assert re.search(r"@v\d+$", step["uses"]), f"pin a major version: {step['uses']}"
            scripts.append(step.get("run", ""))
        script = "\n".join(scripts)
        for target in re.findall(r"\bmake\s+([\w-]+)", script):
            assert target in targets, f"{path.name}: make {target} is not a target of the Makefile"
        if "venv .venv" in script:  # a job that builds the environment installs the CPU torch first
            assert '--index-url "$TORCH_INDEX"' in script and "grep -E '^torch=='" in script
            assert workflow["env"]["TORCH_INDEX"].strip() == "https://download.pytorch.org/whl/cpu"


def test_the_book_workflow_checks_the_build_and_deploys_from_main():
    text = (ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8")
    for needed in ("make book", "_build/html/index.html", "actions/upload-pages-artifact", "actions/deploy-pages"):
        assert needed in text
    assert "refs/heads/main" in text
