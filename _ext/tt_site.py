"""Sphinx fixes for the book's HTML, loaded by _config.yml (``sphinx: local_extensions``).

Checked in a real browser by tests/site/test_site.py (``make check-site``).
"""

from __future__ import annotations


def dedupe_inline_scripts(app, pagename, templatename, context, doctree):
    """Drop repeated ``<script>`` entries from the page.

    Sphinx 7.4 re-adds at ``prepare_writing`` every script registered after ``Builder.init()``, turning an
    inline script's filename ``None`` into ``""``, so the copy is not recognised as a duplicate. Inline
    scripts added by extensions then appear twice, and sphinx-thebe's ``const THEBE_JS_URL = ...`` declared
    twice is a JavaScript error ("Identifier 'THEBE_JS_URL' has already been declared") on every page.
    """
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        key = (getattr(script, "filename", script) or "", repr(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", dedupe_inline_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
