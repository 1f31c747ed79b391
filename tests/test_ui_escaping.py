"""Text from input is shown in the real Dagster UI as text: no image, link or HTML from a file.

A hostile file is ingested into a Dagster instance, `fraud-assets dev` serves
the UI on that instance, and headless Chromium (Debian's ``chromium``, driven
by Playwright; no browser is downloaded) opens the asset pages and every
markdown table of the ingest metadata (previews, quarantine reasons). Every request the page makes
is recorded; none may go to a host named in the input, and no ``<img>`` or
link from the input may be in the page.
"""

import json
import shutil
from urllib.parse import urlparse

import pytest

from fraud_assets.cli import main
from fraud_assets.text import inert
from tests.test_dagster_dev_e2e import STARTUP_TIMEOUT, DagsterDev

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EVIL = "evil.test"  # every host in the payload ends with this
# Protocol-relative URLs are not masked as URLs, so only escaping keeps them inert.
HOSTILE_CSV = (
    "message_id,text,label,fraud_type\n"
    '"![id](//id-img.evil.test/i.png)","![t](//text-img.evil.test/t.png) <img src=//text-html.evil.test/h.png> '
    '[link](//text-link.evil.test/x) 请立即转账到安全账户",1,"<img src=//type.evil.test/y.png>"\n'
    '"<img src=//id2.evil.test/a.png>","您的快递已到达驿站，取件码1234",0,\n'
    'm3,"hello <b>bold</b> <script src=//script.evil.test/s.js></script>","<img src=//label.evil.test/l.png>",\n'
    "![q](//raw-img.evil.test/r.png),too,many,fields,here\n"
)


@pytest.fixture
def dev(tmp_path, monkeypatch):
    server = DagsterDev(tmp_path)
    monkeypatch.setenv("FRAUD_DATA_DIR", str(server.data))
    monkeypatch.setenv("DAGSTER_HOME", str(server.home))
    monkeypatch.setenv("FRAUD_LANDING_SETTLE_SECONDS", "0")
    yield server
    server.stop()


@pytest.mark.slow
def test_hostile_ingest_metadata_renders_as_text_in_the_dagster_ui(dev, capsys):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (`apt-get install -y chromium`)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

    landing = dev.data / "incoming"
    landing.mkdir(parents=True)
    (landing / "hostile.csv").write_text(HOSTILE_CSV, encoding="utf-8")
    main(["ingest", "--json"])
    [entry] = json.loads(capsys.readouterr().out)["files"]
    assert (entry["rows_read"], entry["accepted"], entry["quarantined"]) == (4, 2, 2), entry
    partition = entry["partition"]

    dev.start()
    dev.wait_until_loaded(STARTUP_TIMEOUT)
    requests, shown = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        # nothing leaves the machine: requests are recorded above, then only local ones are served
        page.route(
            "**/*", lambda route: route.continue_() if urlparse(route.request.url).hostname == "127.0.0.1" else route.abort()
        )
        for asset in ("raw_messages", "validated_messages"):
            for view in ("", "&view=events"):
                page.goto(f"{dev.url}/assets/{asset}?partition={partition}{view}", wait_until="networkidle")
                page.get_by_text("quarantine_reasons").first.wait_for(timeout=60_000)
                page.wait_for_timeout(1000)
                shown.append(page.inner_text("body"))
                _assert_nothing_live(page)
                # older UIs render markdown metadata only in a dialog behind "[Show Markdown]"
                buttons = page.get_by_text("[Show Markdown]")
                for i in range(buttons.count()):
                    buttons.nth(i).click()
                    dialog = page.get_by_role("dialog").last
                    dialog.wait_for()
                    shown.append(dialog.inner_text())
                    _assert_nothing_live(page)
                    page.keyboard.press("Escape")
        browser.close()

    text = "\n".join(shown)
    # the dialogs really rendered the input: its markup shows as plain characters
    assert "![t](//text-img.evil.test/t.png)" in text and "<img src=//text-html.evil.test/h.png>" in text
    assert "<img src=//label.evil.test/l.png>" in text and "![q](//raw-img.evil.test/r.png)" in text
    leaked = [url for url in requests if (urlparse(url).hostname or "").endswith(EVIL)]
    assert not leaked, f"the page requested hosts named in the input: {leaked}"
    assert any(urlparse(url).hostname == "127.0.0.1" for url in requests)


def _assert_nothing_live(page) -> None:
    """No element made from the input: images, links, scripts, bold text."""
    for selector, attribute in (("img", "src"), ("a", "href"), ("script", "src"), ("source", "src"), ("iframe", "src")):
        values = page.eval_on_selector_all(selector, f"els => els.map(e => e.getAttribute('{attribute}') || '')")
        assert not [v for v in values if EVIL in v], f"<{selector}> from input in the page: {values}"
    assert page.locator("b", has_text="bold").count() == 0, "HTML from the input was rendered"


def test_report_fraud_types_from_input_are_escaped():
    import polars as pl

    from fraud_assets.evaluation import evaluate
    from tests.test_evaluation import model_proba, synthetic_dataset

    hostile = "![x](//type.evil.test/y.png) <img src=//h.evil.test/i.png>"
    dataset = synthetic_dataset().with_columns(pl.col("fraud_type").replace("loan", hostile))
    result = evaluate(dataset, model_proba(dataset, "validation", 0.1), model_proba(dataset, "test", 0.1))
    assert hostile in result.metrics["per_fraud_type_recall"]  # metrics.json keeps the real name
    assert hostile not in result.report_md and "<img" not in result.report_md and "![x]" not in result.report_md
    assert f"| {inert(hostile)} |" in result.report_md
