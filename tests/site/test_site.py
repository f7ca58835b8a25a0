"""The built book (_build/html) as a reader's browser shows it: headless Chromium driven by Playwright.

Run with `make check-site` after `make book` (the unit tests skip this folder: see pyproject.toml). For
every page of the table of contents (_toc.yml), at desktop width (1366 px):

* the page loads (HTTP 200) without JavaScript errors, and every local resource it asks for exists;
* every image loads (``naturalWidth > 0``);
* every internal link resolves: the page exists and so does the anchor (citations, glossary terms,
  cross-references, the table of contents);
* no code block, output or table is clipped (``scrollWidth > clientWidth``: the reader has to scroll
  sideways to see the end of a line);
* math: offline, the math markup is there for MathJax to typeset (TeX in ``span.math``/``div.math`` and the
  MathJax script tag); with ``TT_SITE_ONLINE=1`` MathJax is loaded from its CDN and every formula must be
  typeset without errors.

At phone width (390 px) every page must fit the screen (no sideways scrolling of the whole page). Screenshots
of every page at both widths are saved to _build/screenshots/{desktop,phone}/ for review.

Offline (the default) every request to another host is aborted, so the check gives the same result with or
without a network: the CDN resources the theme loads (MathJax, and the like) fail, and those failures are
not counted as errors. Set ``TT_SITE_ONLINE=1`` (CI does) to let them through.

The browser: ``TT_BROWSER`` if set, else the first of chromium, chromium-browser, google-chrome on PATH. If
there is none, the tests fail with the fix (``apt-get install chromium``); they never skip.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import pathlib
import shutil
import threading
import urllib.parse

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
ONLINE = os.environ.get("TT_SITE_ONLINE", "") not in ("", "0")
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Flags for a root user in a container with a closed network (no sandbox, no background connections).
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
# A few pixels of tolerance: sub-pixel rounding makes scrollWidth exceed clientWidth by 1 now and then.
CLIP_TOLERANCE_PX = 2


def toc_pages() -> list[str]:
    """The html paths (relative to _build/html) of every file in _toc.yml, root first."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [f"{pathlib.PurePosixPath(f).with_suffix('')}.html" for f in files]


PAGES = toc_pages()


# --------------------------------------------------------------------------- the browser and the server


def find_browser() -> str:
    explicit = os.environ.get("TT_BROWSER")
    if explicit:
        if not (shutil.which(explicit) or pathlib.Path(explicit).is_file()):
            pytest.fail(f"TT_BROWSER={explicit!r} is not an executable file", pytrace=False)
        return shutil.which(explicit) or explicit
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "no Chromium or Chrome found (looked for " + ", ".join(BROWSER_NAMES) + " on PATH). Fix: install the "
        "distribution's Chromium, e.g. `sudo apt-get install -y chromium` on Debian (`chromium-browser` on "
        "some Ubuntu releases), or point TT_BROWSER at a Chrome/Chromium binary. Playwright uses that browser; "
        "`playwright install` is not needed.",
        pytrace=False,
    )


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log on stderr
        pass


@pytest.fixture(scope="session")
def base_url():
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built book at {SITE / 'index.html'}: run `make book` first", pytrace=False)
    shutil.rmtree(SHOTS, ignore_errors=True)  # screenshots of this run only
    handler = functools.partial(QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    executable = find_browser()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: `make venv-dev` (pip install -r requirements-dev.txt)", pytrace=False)
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        except Exception as err:  # any launch failure: name the browser and the fix
            pytest.fail(f"could not start {executable} ({err}). Fix: `apt-get install -y chromium`", pytrace=False)
        yield chromium
        chromium.close()


def is_local(url: str, base_url: str) -> bool:
    return url.startswith(base_url) or url.startswith(("data:", "blob:", "about:"))


class PageReport:
    """What one page load showed: errors, failed requests, images, links, clipped blocks, math."""

    def __init__(self):
        self.status: int | None = None
        self.js_errors: list[str] = []
        self.console_errors: list[str] = []
        self.failed_local: list[str] = []
        self.blocked_external: list[str] = []
        self.facts: dict = {}


def load(browser, base_url: str, page_path: str, viewport: dict, mobile: bool = False) -> PageReport:
    report = PageReport()
    context = browser.new_context(viewport=viewport, is_mobile=mobile, has_touch=mobile, device_scale_factor=1)
    if not ONLINE:

        def route(r):
            if is_local(r.request.url, base_url):
                r.continue_()
            else:
                report.blocked_external.append(r.request.url)
                r.abort("internetdisconnected")

        context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda err: report.js_errors.append(str(err)))

    def on_console(msg):
        if msg.type != "error":
            return
        where = (msg.location or {}).get("url", "")
        if not ONLINE and where and not is_local(where, base_url):
            return  # a blocked external resource (offline check): not the page's fault
        if not ONLINE and "net::ERR_INTERNET_DISCONNECTED" in msg.text:
            return
        report.console_errors.append(f"{msg.text} ({where})")

    page.on("console", on_console)
    page.on(
        "requestfailed",
        lambda req: report.failed_local.append(f"{req.url} ({req.failure})") if is_local(req.url, base_url) else None,
    )
    page.on(
        "response",
        lambda resp: (
            report.failed_local.append(f"{resp.url} (HTTP {resp.status})")
            if resp.status >= 400 and is_local(resp.url, base_url)
            else None
        ),
    )
    response = page.goto(base_url + page_path, wait_until="load")
    report.status = response.status if response else None
    page.wait_for_timeout(300)  # late errors from deferred scripts
    if ONLINE:  # wait for MathJax to typeset every formula; test_math reports what it did not
        try:
            page.wait_for_function(
                "() => document.querySelectorAll('mjx-container').length"
                " >= document.querySelectorAll('span.math, div.math').length",
                timeout=30_000,
            )
        except Exception:  # a timeout: the counts in the report tell what is missing
            pass
    report.facts = page.evaluate(FACTS_JS, {"tolerance": CLIP_TOLERANCE_PX})
    folder = SHOTS / ("phone" if mobile else "desktop")
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / (page_path.replace("/", "__").removesuffix(".html") + ".png")), full_page=True)
    context.close()
    return report


# Collected in the page: images, links, clipped elements, math and page-level overflow.
FACTS_JS = """
async ({tolerance}) => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 5000); })));
  const describe = el => {
    const text = (el.innerText || '').split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '');
    const cell = el.closest('.cell');
    const where = cell ? 'cell ' + (Array.from(document.querySelectorAll('.cell')).indexOf(cell) + 1) : '';
    return {tag: el.tagName.toLowerCase(), cls: el.className && String(el.className).slice(0, 60), where,
            scroll: el.scrollWidth, client: el.clientWidth, longest: text.slice(0, 160)};
  };
  const main = document.querySelector('main') || document.body;
  const candidates = new Set();
  main.querySelectorAll('pre, table, .highlight, .output, .cell_output > div, .pst-scrollable-table-container,'
                        + ' div.math, mjx-container[display="true"]').forEach(el => candidates.add(el));
  const clipped = Array.from(candidates).filter(el => el.clientWidth > 0
    && el.scrollWidth > el.clientWidth + tolerance).map(describe);
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => ({
    href: a.href, raw: a.getAttribute('href'), text: (a.textContent || '').trim().slice(0, 60),
    cls: String(a.className || '')}));
  return {
    title: document.title,
    images: imgs.map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0,
                            width: i.naturalWidth})),
    links,
    clipped,
    math: {
      inline: document.querySelectorAll('span.math').length,
      display: document.querySelectorAll('div.math').length,
      tex: Array.from(document.querySelectorAll('span.math, div.math')).filter(
        el => /\\\\\\(|\\\\\\[|\\$\\$|\\\\begin/.test(el.textContent)).length,
      typeset: document.querySelectorAll('mjx-container').length,
      errors: document.querySelectorAll('mjx-merror').length,
      script: Array.from(document.scripts).some(s => /mathjax/i.test(s.src)),
    },
    pageWidth: document.documentElement.scrollWidth,
  };
}
"""


@pytest.fixture(scope="session")
def desktop(browser, base_url):
    return functools.cache(lambda page_path: load(browser, base_url, page_path, DESKTOP))


@pytest.fixture(scope="session")
def phone(browser, base_url):
    return functools.cache(lambda page_path: load(browser, base_url, page_path, PHONE, mobile=True))


# --------------------------------------------------------------------------- anchors of the built files


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "id" or (tag == "a" and name == "name")):
                self.ids.add(value)


@functools.cache
def anchors_of(path: pathlib.Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def broken_link(href: str, base_url: str) -> str | None:
    """Why the same-site link ``href`` (absolute) does not resolve, or None if it does."""
    url = urllib.parse.urlsplit(href)
    rel = urllib.parse.unquote(url.path)[len(urllib.parse.urlsplit(base_url).path) :]
    target = SITE / rel
    if rel == "" or rel.endswith("/"):
        target = target / "index.html"
    if not target.is_file():
        return f"no file {target.relative_to(SITE)}"
    fragment = urllib.parse.unquote(url.fragment)
    if fragment and target.suffix == ".html" and fragment not in anchors_of(target):
        return f"no anchor #{fragment} in {target.relative_to(SITE)}"
    return None


# --------------------------------------------------------------------------- the checks, page by page


@pytest.mark.parametrize("page_path", PAGES)
def test_page_loads_without_javascript_errors(desktop, page_path):
    report = desktop(page_path)
    assert report.status == 200, f"{page_path}: HTTP {report.status}"
    problems = [f"uncaught: {e}" for e in report.js_errors] + [f"console: {e}" for e in report.console_errors]
    problems += [f"missing local resource: {r}" for r in report.failed_local]
    assert not problems, f"{page_path}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("page_path", PAGES)
def test_every_image_loads(desktop, base_url, page_path):
    images = desktop(page_path).facts["images"]
    broken = [i["src"] for i in images if not i["ok"] and (ONLINE or is_local(i["src"], base_url))]
    assert not broken, f"{page_path}: images that did not load:\n  " + "\n  ".join(broken)


@pytest.mark.parametrize("page_path", PAGES)
def test_internal_links_and_citations_resolve(desktop, base_url, page_path):
    links = desktop(page_path).facts["links"]
    broken = []
    for link in links:
        if not link["href"].startswith(base_url) or link["raw"] in ("#", ""):
            continue
        why = broken_link(link["href"], base_url)
        if why:
            broken.append(f"{link['raw']!r} ({link['text']!r}): {why}")
    assert not broken, f"{page_path}: links that do not resolve:\n  " + "\n  ".join(broken)


@pytest.mark.parametrize("page_path", PAGES)
def test_no_code_line_or_table_is_clipped_at_desktop_width(desktop, page_path):
    clipped = desktop(page_path).facts["clipped"]
    lines = [
        f"{c['tag']}.{c['cls']} {c['where']}: {c['scroll']} px wide in {c['client']} px; longest line: {c['longest']!r}"
        for c in clipped
    ]
    assert not lines, f"{page_path} at {DESKTOP['width']} px: clipped (the reader must scroll sideways):\n  " + (
        "\n  ".join(lines)
    )


@pytest.mark.parametrize("page_path", PAGES)
def test_math(desktop, page_path):
    math = desktop(page_path).facts["math"]
    n = math["inline"] + math["display"]
    if n == 0:
        return  # no math on this page
    assert math["script"], f"{page_path}: {n} formulas but no MathJax script tag"
    if ONLINE:
        assert math["typeset"] >= n and math["errors"] == 0, f"{page_path}: MathJax typeset {math}"
    else:
        # Offline, MathJax (from its CDN) cannot run: check that the TeX is there for it to typeset.
        assert math["tex"] == n, f"{page_path}: {n - math['tex']} of {n} math elements hold no TeX delimiters"


def test_the_book_has_math_figures_and_citations(desktop):
    """Guards the checks above against passing on empty pages: the book as a whole has all three."""
    reports = [desktop(p) for p in PAGES]
    blocked = sorted({urllib.parse.urlsplit(u).netloc for r in reports for u in r.blocked_external})
    summary = [f"site check, {'online' if ONLINE else 'offline'}; pages of _toc.yml: {len(PAGES)}"]
    summary += [
        f"  {p}: {len(r.facts['images'])} images, {len(r.facts['links'])} links, "
        f"{r.facts['math']['inline'] + r.facts['math']['display']} formulas, {len(r.facts['clipped'])} clipped"
        for p, r in zip(PAGES, reports)
    ]
    summary.append("external hosts blocked (offline check): " + (", ".join(blocked) or "none"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "site-check.txt").write_text("\n".join(summary) + "\n", encoding="utf-8")
    assert sum(r.facts["math"]["inline"] + r.facts["math"]["display"] for r in reports) > 0
    assert sum(len(r.facts["images"]) for r in reports) > 0
    assert any("references" in link["href"] and "#" in link["href"] for r in reports for link in r.facts["links"])


@pytest.mark.parametrize("page_path", [p for p in PAGES if p.startswith("notebooks/")])
def test_launch_buttons_point_at_the_repository(desktop, page_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo = urllib.parse.urlsplit(config["repository"]["url"]).path.strip("/")  # owner/name
    notebook = page_path.removesuffix(".html") + ".ipynb"
    hrefs = [link["href"] for link in desktop(page_path).facts["links"]]
    colab = [h for h in hrefs if "colab.research.google.com" in h]
    binder = [h for h in hrefs if "mybinder.org" in h]
    assert colab and all(f"/github/{repo}/blob/" in h and h.endswith(notebook) for h in colab), colab
    assert binder and all(f"/v2/gh/{repo}/" in h and notebook in urllib.parse.unquote(h) for h in binder), binder


@pytest.mark.parametrize("page_path", PAGES)
def test_page_fits_a_phone(phone, page_path):
    facts = phone(page_path).facts
    # On a phone the layout viewport grows to fit wide content, so compare with the screen, not innerWidth.
    assert facts["pageWidth"] <= PHONE["width"] + CLIP_TOLERANCE_PX, (
        f"{page_path} at {PHONE['width']} px: the whole page is {facts['pageWidth']} px wide "
        f"(sideways scrolling of the page, not of one block)"
    )
