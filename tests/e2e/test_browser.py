"""The report in a real browser: the tiny-model DAG's report opened in headless Chromium
(Debian's `chromium` package, driven by Playwright's Python package) at 1200 px wide.

It checks that the first screen shows one headline per model and the whole summary table; that
the page has no horizontal overflow in any tab and that no key column (a ratio, an interval, a
verdict: pipeline/columns.py) lies outside its table's visible box; that every figure's smallest
font is at least 10 px as shown; that every image and every interactive figure has rendered
(non-zero size, no console error, no request leaving the file), and that every model section and
every corpus tab is reachable from the contents. It saves a screenshot of the first screen and a
full-page one to test-artifacts/ (or $MASSIVE_ARTIFACTS). MASSIVE_REPORT=path checks that
report instead of running the DAG (e.g. the default run's results/report_default.html).

Without chromium (or Playwright) the test is skipped with the reason; with
MASSIVE_BROWSER_TEST=require (set by .ci/run, which installs chromium) it fails instead.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from helpers import REPO, TINY_SWEEP

WIDTH, HEIGHT = 1200, 900
MIN_FONT_PX = 10
ARTIFACTS = Path(os.environ.get("MASSIVE_ARTIFACTS", REPO / "test-artifacts"))
SWEEP = TINY_SWEEP  # the shared tiny whole-DAG run (conftest.tiny_dag)


def chromium() -> str:
    """The system Chromium, or skip (fail where .ci/run requires the browser test)."""
    path = os.environ.get("MASSIVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    reason = None
    if path is None:
        reason = "no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install -e '.[test]')"
    if reason:
        if os.environ.get("MASSIVE_BROWSER_TEST") == "require":
            pytest.fail(f"MASSIVE_BROWSER_TEST=require but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def report(request) -> Path:
    os.environ["MASSIVE_CHROMIUM"] = chromium()
    if os.environ.get("MASSIVE_REPORT"):
        return Path(os.environ["MASSIVE_REPORT"])
    return request.getfixturevalue("tiny_dag") / "results" / "report_sweep.html"


# In the page: what is shown now (the open tab of each model, details opened) and its state.
STATE = """() => {
  const shown = el => el.getClientRects().length > 0;
  const size = el => { const r = el.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
  return {
    overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    images: [...document.querySelectorAll("img")].map((i, n) => ({n, alt: i.alt, natural: i.naturalWidth, size: size(i),
              font: i.dataset.fontPx ? +i.dataset.fontPx * i.getBoundingClientRect().width / i.naturalWidth : null}))
              .filter((_, n) => shown(document.images[n])),
    hidden_keys: [...document.querySelectorAll(".table-wrap")].filter(shown).flatMap(w => {
      w.scrollLeft = 0;
      const box = w.getBoundingClientRect();
      return [...w.querySelectorAll("th[data-key]")].filter(th => th.getBoundingClientRect().right > box.right + 1)
        .map(th => `${th.textContent} (${Math.round(th.getBoundingClientRect().right - box.right)} px to the right)`);
    }),
    plots: [...document.querySelectorAll(".plotly-graph-div")].filter(shown).map(d => ({
      id: d.id, traces: d.data.length, size: size(d),  // the traces drawn: lines, and the heatmap's image
      drawn: d.querySelectorAll(".scatterlayer .trace").length + d.querySelectorAll("svg.main-svg image").length})),
  };
}"""


def explore(page) -> tuple[str, list]:
    """Hover the first token of the first token map (its label); click the sweep curves' first legend
    entry (the visibility of every line after it), and again."""
    drag = page.locator(".plotly-graph-div[id$='-token_map'] .nsewdrag").first
    drag.scroll_into_view_if_needed()
    box = drag.bounding_box()
    for dx in (0, 2):
        page.mouse.move(box["x"] + box["width"] / 2 + dx, box["y"] + 3)  # the first token's row
    page.wait_for_timeout(300)
    hover = page.evaluate(
        "() => document.querySelector(\".plotly-graph-div[id$='-token_map'] .hoverlayer\").textContent"
    )
    page.locator("#fig-sweep-layerwise .legend .traces .legendtoggle").first.click(force=True)
    page.wait_for_timeout(1000)  # plotly waits out a double click first
    toggled = page.evaluate(
        "() => document.getElementById('fig-sweep-layerwise').data.map(t => [t.legendgroup, t.visible ?? true])"
    )
    page.locator("#fig-sweep-layerwise .legend .traces .legendtoggle").first.click(force=True)  # and back
    page.wait_for_timeout(1000)
    page.mouse.move(0, 0)
    return hover, toggled


@pytest.mark.slow
def test_report_in_a_browser(report):
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ["MASSIVE_CHROMIUM"], args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "**/*",
            lambda route: (
                (requests.append(route.request.url), route.continue_())
                if not route.request.url.startswith(("file:", "data:"))
                else route.continue_()
            ),
        )
        start = time.perf_counter()
        page.goto(report.as_uri(), wait_until="load")
        page.wait_for_function("() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d._fullLayout)")
        loaded = time.perf_counter() - start
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        first = ARTIFACTS / f"report_first_screen_{WIDTH}px.png"
        page.screenshot(path=str(first))  # what a reader sees first: the headline and the whole summary
        screen = page.evaluate("""() => {
          const r = el => el.getBoundingClientRect();
          const wrap = document.querySelector("#summary .table-wrap");
          return {headlines: [...document.querySelectorAll("#headline .headline")].map(p => [p.textContent.trim(), r(p).bottom]),
                  summary_bottom: r(wrap).bottom, summary_scroll: wrap.scrollWidth - wrap.clientWidth,
                  models: document.querySelectorAll("section.model").length};
        }""")
        page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")

        images, plots, hidden = {}, {}, []
        tabs = page.locator('[role="tab"]')
        for i in range(tabs.count()):  # every corpus tab of every model, one at a time
            tabs.nth(i).click()
            page.wait_for_timeout(100)
            state = page.evaluate(STATE)
            assert state["overflow"] <= 0, (
                f"horizontal overflow of {state['overflow']} px with tab {tabs.nth(i).inner_text()}"
            )
            hidden += [f"{tabs.nth(i).inner_text()}: {k}" for k in state["hidden_keys"]]
            images.update({im["n"]: im for im in state["images"]})
            plots.update({pl["id"]: pl for pl in state["plots"]})
        page.locator('[role="tab"]').first.click()
        page.locator(".panel .figs img").first.click()  # a click enlarges a figure, Escape closes it
        enlarged = page.evaluate(
            "() => [document.getElementById('lightbox').classList.contains('open'), "
            "document.querySelector('#lightbox img').naturalWidth]"
        )
        page.keyboard.press("Escape")
        assert enlarged[0] and enlarged[1] > 0 and not page.locator("#lightbox.open").count(), enlarged
        shot = ARTIFACTS / f"report_{WIDTH}px.png"
        page.locator('[role="tab"]').first.click()
        page.screenshot(path=str(shot), full_page=True)
        hover, toggled = explore(page)  # after the screenshot: plotly shows a hint after a legend click

        # every model section and every corpus tab is reachable from the contents
        models = page.eval_on_selector_all("section.model", "els => els.map(e => e.id)")
        panels = page.eval_on_selector_all(".panel", "els => els.map(e => e.id)")
        for target in models + panels:
            link = page.locator(f'nav.contents a[href="#{target}"]')
            assert link.count() == 1, f"no link to #{target} in the contents"
            link.click()
            page.wait_for_timeout(100)
            box = page.evaluate(f"""() => {{ const r = document.getElementById("{target}").getBoundingClientRect();
                                            return [r.top, r.height]; }}""")
            assert box[1] > 0 and abs(box[0]) < 5, f"#{target} is not shown at the top after its link: {box}"
        n_pairs = len(SWEEP["corpora"]) + 1
        browser.close()

    # the first screen: a headline per model, then the whole summary, without scrolling either way
    assert len(screen["headlines"]) == screen["models"] and all(
        text and bottom <= HEIGHT for text, bottom in screen["headlines"]
    ), screen
    assert screen["summary_bottom"] <= HEIGHT and screen["summary_scroll"] <= 0, screen
    assert not hidden, f"key columns outside their table's visible box: {sorted(set(hidden))[:5]}"
    small = {
        im["alt"]: round(im["font"], 1) for im in images.values() if im["font"] is not None and im["font"] < MIN_FONT_PX
    }
    assert not small, f"figures whose smallest font is under {MIN_FONT_PX} px as shown: {small}"
    assert any(im["font"] is not None for im in images.values()), (
        "no figure says its font size (save_figure's min_font_px)"
    )
    assert "token 0: " in hover and "layer " in hover and "max |a| " in hover and "(dim " in hover, hover
    # the first model's lines (top 1 and median on each corpus) hide together, the others stay
    assert all((v == "legendonly") == (group == toggled[0][0]) for group, v in toggled) and toggled[-1][1] is True, (
        toggled
    )
    assert not errors, errors
    assert not requests, f"the page asked the network for {requests[:3]}"
    if not os.environ.get("MASSIVE_REPORT"):  # the tiny sweep: 2 models, 3 (model, corpus) tabs
        assert len(models) == 2 and len(panels) == n_pairs, (models, panels)
        assert len(plots) == 2 * n_pairs + 1, sorted(plots)  # per pair: layerwise, token map; the sweep's curves
    assert images and all(im["natural"] > 0 and min(im["size"]) > 0 for im in images.values()), images
    assert len(plots) == 2 * len(panels) + 1, sorted(plots)
    assert all(pl["traces"] > 0 and pl["drawn"] == pl["traces"] and min(pl["size"]) > 0 for pl in plots.values()), plots
    assert shot.stat().st_size > 10_000
    print(
        f"report {report.stat().st_size / 1e6:.1f} MB, loaded and drawn in {loaded:.2f} s at {WIDTH} px; "
        f"{len(images)} images, {len(plots)} interactive figures; screenshot {shot}"
    )
