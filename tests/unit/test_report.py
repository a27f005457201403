"""The report building blocks and the HTML export (crmbook.report), on small notebooks built here."""
from __future__ import annotations

import base64
import io
import json
import re

import nbformat
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from crmbook import report
from crmbook.report import Card

RUN = "20260101-120000-demo"


@pytest.mark.parametrize("text, expected", [
    ("5,000", (5000.0, "")), ("USD 1,234", (1234.0, "")), ("43.4%", (43.4, "%")), ("52.1×", (52.1, "×")),
    ("-0.5", (-0.5, "")), ("2023-01-01 – 2024-12-31", None), ("Pareto/NBD", None), ("direct 41%", None),
    ("14 days", None), ("", None), ("1,23", None)])
def test_parse_number_reads_one_formatted_number_or_nothing(text, expected):
    assert report.parse_number(text) == expected


@pytest.mark.parametrize("now, before, change, direction", [
    ("1,100", "1,000", "+10.0% vs last run", "up"),
    ("USD 900", "USD 1,000", "−10.0% vs last run", "down"),
    ("45.0%", "43.5%", "+1.5 pts vs last run", "up"),
    ("3", "0", "+3 vs last run", "up"),
    ("5,000", "5,000", "unchanged", "flat"),
])
def test_card_change_against_the_previous_run(now, before, change, direction):
    card = report.card_change(Card("Customers", now), Card("Customers", before))
    assert (card.change, card.direction) == (change, direction)
    assert card.previous == f"Previous run: {before}"
    html = report.cards_html([card])
    assert change in html and f'class="change {direction}"' in html


def test_card_change_needs_two_comparable_numbers():
    card = Card("Model", "Pareto/NBD")
    assert report.card_change(card, Card("Model", "BG/NBD")) == card
    assert report.card_change(Card("Share", "40%"), Card("Share", "40")) == Card("Share", "40%")
    assert report.card_change(Card("Customers", "5"), None) == Card("Customers", "5")
    assert report.card_change(Card("客户数", "12"), Card("客户数", "10"), "zh").change == "较上次 +20.0%"


def test_changes_against_matches_cards_by_label_and_reads_old_summaries():
    now = {"cards": [{"label": "Orders", "value": "120", "note": ""}, {"label": "New", "value": "7"}]}
    before = {"cards": [["Orders", "100"]]}
    changes = report.changes_against(now, before)
    assert changes["Orders"].direction == "up" and changes["New"].change == ""
    assert report.changes_against(None, before) == {}


def test_short_tables_are_plain_and_long_tables_sortable_with_numeric_order():
    short = report.table_html(pd.DataFrame({"segment": ["A", "B"], "customers": ["1,000", "20"]}))
    assert "crm-datatable" not in short and "data-order" not in short
    frame = pd.DataFrame({"segment": [f"<s{i}>" for i in range(40)], "revenue": [f"USD {i * 1000:,}" for i in range(40)]})
    long = report.table_html(frame, max_rows=30)
    soup = BeautifulSoup(long, "html.parser")
    assert "crm-datatable" in soup.table["class"]
    assert len(soup.select("tbody tr")) == 30
    assert [td.get("data-order") for td in soup.select("tbody tr td:nth-of-type(2)")][:3] == ["0.0", "1000.0", "2000.0"]
    assert soup.select_one("tbody td").get("data-order") is None  # text columns sort as text
    assert "&lt;s0&gt;" in long  # escaped
    cut = soup.select_one("p.crm-truncated")
    assert (cut["data-shown"], cut["data-total"]) == ("30", "40")


def _png() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def executed_notebook(path, long_table: bool = False):
    """A notebook as papermill leaves it: title cell, parameters, summary, a section, method notes."""
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell("# 09 Example\n\nWhat this stage answers."),
        v4.new_code_cell("params_path = 'secret.yaml'", metadata={"tags": ["parameters"]}),
        v4.new_code_cell("from crmbook import report\ncfg = config.load(params_path)"),
        v4.new_code_cell("cards", outputs=[v4.new_output("display_data", data={"text/html": report.heading("findings").data}),
                                           v4.new_output("display_data", data={"text/html": report.cards_html(
                                               [Card("Orders", "120"), Card("Model", "X")])}),
                                           v4.new_output("display_data", data={"text/html": report.findings(["One."]).data})]),
        v4.new_code_cell("chart", outputs=[v4.new_output("stream", name="stderr", text="UserWarning: noisy\n"),
                                           v4.new_output("display_data", data={"text/html": "<h2>Section &amp; more</h2>"}),
                                           v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"}),
                                           v4.new_output("display_data", data={"text/html": report.caption("What to see.").data})]),
        v4.new_code_cell("table", outputs=[v4.new_output("display_data", data={"text/html": report.table_html(
            pd.DataFrame({"n": range(20 if long_table else 3)}))})]),
        v4.new_code_cell("notes", metadata={"tags": [report.FOOTER_TAG]},
                         outputs=[v4.new_output("display_data", data={"text/html": "<h2>Method notes</h2><p>How.</p>"})]),
    ]
    nb = v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)
    return path


def info(**changes) -> report.RunInfo:
    values = dict(run_id=RUN, title="Customer analytics", as_of="2025-01-01", run_date="2026-01-01 12:00 UTC",
                  params_file="demo.yaml", version="0.1.0", sources=(("transactions", "orders.csv"),),
                  previous_run="20251231-120000-demo", workbook=f"crmbook_{RUN}.xlsx", dictionary=True)
    return report.RunInfo(**{**values, **changes})


def test_export_html_frame_header_toc_cards_footer(tmp_path):
    nb = executed_notebook(tmp_path / "09_example.ipynb")
    changes = report.changes_against({"cards": [{"label": "Orders", "value": "120"}]}, {"cards": [{"label": "Orders", "value": "100"}]})
    out = report.export_html(nb, tmp_path / "09_example.html", "09_example", info(), changes)
    page = out.read_text(encoding="utf-8")
    soup = BeautifulSoup(page, "html.parser")
    # no code, no parameters, no prompts, no stderr, the title cell replaced by the header
    for marker in ("config.load", "secret.yaml", "params_path", "In&nbsp;[", "UserWarning", 'class="jp-InputPrompt'):
        assert marker not in page, marker
    header = soup.select_one("header.crm-header")
    assert header.h1.get_text() == "09 Example" and soup.find_all("h1") == [header.h1]
    assert "What this stage answers." in header.get_text()
    meta = header.select_one(".crm-meta").get_text(" ", strip=True)
    assert "Data as of 2025-01-01" in meta and "Run date 2026-01-01 12:00 UTC" in meta and RUN in meta
    assert "20251231-120000-demo" in meta
    # the table of contents lists the body's headings, each link names a heading
    links = soup.select("nav.crm-toc ol a")
    assert [a.get_text() for a in links] == ["Findings", "Section & more", "Method notes"]
    for link in links:
        target = soup.find(id=link["href"][1:])
        assert target is not None and target.name in ("h2", "h3")
    assert soup.select_one(".jp-RenderedImage img")["alt"] == "What to see."
    # cards: the change against the previous run on the numeric card only
    orders, model = soup.select(".crm-card")
    assert orders.select_one(".change").get_text(" ", strip=True) == "▲ +20.0% vs last run"
    assert model.select_one(".change") is None
    # footer: method notes moved there, sources, links to the index, manifest, dictionary, workbook
    footer = soup.select_one("footer.crm-footer")
    assert "How." in footer.get_text() and "How." not in soup.select_one(".crm-body").get_text()
    assert "orders.csv" in footer.get_text()
    hrefs = {a["href"] for a in footer.find_all("a")}
    assert {"index.html", "manifest.json", "tables/README.md", f"crmbook_{RUN}.xlsx"} <= hrefs
    # offline and small: no script at all without a long table, nothing from a network
    assert soup.find("script") is None
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert len(page.encode()) < 40_000


def test_export_html_pages_long_tables_with_inlined_datatables_in_the_language(tmp_path):
    nb = executed_notebook(tmp_path / "09_example.ipynb", long_table=True)
    page = report.export_html(nb, tmp_path / "09.html", "03_segmentation", info(language="zh", previous_run=None)).read_text(encoding="utf-8")
    soup = BeautifulSoup(page, "html.parser")
    scripts = soup.find_all("script")
    assert len(scripts) == 2 and all(not s.get("src") for s in scripts)
    assert "DataTables 3" in scripts[0].string and "搜索：" in scripts[1].string
    assert soup.html["lang"] == "zh-CN"
    assert soup.select_one("header h1").get_text() == "03 客户分群"
    assert report.t("first_run", "zh") in soup.select_one("header").get_text()
    assert report.t("03_segmentation_lead", "zh") in soup.select_one("header").get_text()


def _run(folder, run_id, cards):
    summary = folder / run_id / "summary"
    summary.mkdir(parents=True)
    (summary / "03_segmentation.json").write_text(json.dumps({"cards": cards, "findings": ["f"]}), encoding="utf-8")
    return folder / run_id


def test_earlier_runs_are_the_successful_runs_of_the_same_params(tmp_path):
    first = _run(tmp_path, "20260101-100000-demo", [])
    _run(tmp_path, "20260101-110000-demo.failed", [])
    _run(tmp_path, "20260101-113000-other", [])
    _run(tmp_path, ".20260101-115000-demo.partial", [])
    second = _run(tmp_path, "20260101-114000-demo-2", [])
    later = _run(tmp_path, "20260102-000000-demo", [])
    (tmp_path / "latest").symlink_to(later.name)
    assert report.earlier_runs(tmp_path, RUN) == [first, second]


def test_index_page_with_changes_history_and_localised_skip_reasons(tmp_path):
    old = _run(tmp_path, "20251230-120000-demo", [{"label": "Customers", "value": "900"}, {"label": "Model", "value": "A"}])
    prev = _run(tmp_path, "20251231-120000-demo", [{"label": "Customers", "value": "1,000"}, {"label": "Model", "value": "B"}])
    run_dir = tmp_path / RUN
    run_dir.mkdir()
    now = {"03_segmentation": {"cards": [{"label": "Customers", "value": "1,100"}, {"label": "Model", "value": "B"}], "findings": ["Top."]}}
    manifest = {"run_id": RUN, "status": "succeeded", "error": None, "title": "T", "as_of": "2025-01-01",
                "started": "2026-01-01T12:00:00+00:00", "finished": "2026-01-01T12:01:00+00:00", "duration_s": 60.0,
                "params_file": "/x/demo.yaml", "git_commit": None, "versions": {"crmbook": "0.1.0", "python": "3.11"},
                "stages": [{"name": "03_segmentation", "status": "succeeded", "duration_s": 5.0, "reason": ""},
                           {"name": "05_attribution", "status": "skipped", "duration_s": 0.0,
                            "reason": "no input: needs a touchpoints or attribution_paths table, and the params have none"}]}
    history = [(p.name, report.read_summaries(p)) for p in (old, prev)]
    page = report.write_index(run_dir, manifest, now, "zh", previous=history[-1][1], previous_run=prev.name,
                              history=history, workbook="crmbook_x.xlsx", dictionary=True).read_text(encoding="utf-8")
    soup = BeautifulSoup(page, "html.parser")
    assert soup.html["lang"] == "zh-CN"
    assert soup.select_one("a[href='03_segmentation.html']").get_text() == "03 客户分群"
    assert soup.select_one(".crm-card .change").get_text(" ", strip=True) == "▲ 较上次 +10.0%"
    assert "无输入：需要 touchpoints / attribution_paths 数据表" in page
    rows = soup.select("table.crm-history tbody tr")
    assert len(rows) == 1  # the model card is not a number
    assert [td.get_text() for td in rows[0].find_all("td")][1:] == ["Customers", "900", "1,000", "1,100"]
    assert {"manifest.json", "tables/README.md", "crmbook_x.xlsx"} <= {a["href"] for a in soup.find_all("a")}
    assert soup.find("script") is None and "&#34;" not in soup.style.string


def test_kpi_history_keeps_runs_in_order_and_marks_missing_values():
    rows = report.kpi_history([("a", {"s": {"cards": [["Orders", "1"]]}}), ("b", {"s": {"cards": [["Orders", "2"], ["New", "3"]]}})])
    assert rows == [report.HistoryRow("s", "Orders", ("1", "2")), report.HistoryRow("s", "New", (None, "3"))]


def test_the_template_drops_everything_fetched_from_a_network(tmp_path):
    page = report.export_html(executed_notebook(tmp_path / "n.ipynb"), tmp_path / "n.html", "n", info()).read_text(encoding="utf-8")
    lowered = page.lower()
    for marker in ("require.js", "mathjax", "mermaid", "cdn.", "@import", "fonts.googleapis"):
        assert marker not in lowered, marker


@pytest.mark.parametrize("run_id, scenario", [("20260101-120000-demo", "demo"), ("20260101-120000-demo-2", "demo"),
                                              ("20260101-120000-my-params", "my-params"), ("latest", None)])
def test_scenario_of_agrees_with_performance(run_id, scenario):
    from crmbook import performance

    assert report.scenario_of(run_id) == performance.scenario_of(run_id) == scenario
