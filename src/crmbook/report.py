"""Report building blocks and the HTML reports of a run.

For the notebooks: KPI cards, findings, captions, headings and tables (`cards`, `findings`,
`caption`, `heading`, `table`), and `publish`, which saves a stage's summary for the index page.

For the runner: `export_html` renders an executed notebook into a standalone report with the
`crmbook` template (it extends nbconvert's `lab` template): a header with the title, the data's
as-of date, the run date and id; a table of contents that stays in view; KPI cards with their
change against the previous run of the same params file; a footer with method notes, data sources
and links to the manifest and the exports. No code, prompts or parameter cells, and nothing
fetched from a network (no require.js, MathJax, CDN fonts or styles). `write_index` writes the
run's index.html with each stage's status and headline KPIs and the KPI history across runs.

Every word a report generates comes from `TEXT` (text/*.yaml), in English and Chinese.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from typing import TYPE_CHECKING

from IPython.display import HTML
from jinja2 import Environment, FileSystemLoader, select_autoescape

if TYPE_CHECKING:  # nbformat and nbconvert are imported where a report is exported: importing them costs
    import nbformat  # several seconds (jsonschema), and every stage's kernel imports this module
    from nbconvert import HTMLExporter

TEMPLATES = Path(__file__).parent / "templates"
STATIC = TEMPLATES / "crmbook" / "static"
TEXT_DIR = Path(__file__).parent / "text"

#: Tables with more rows than this are sorted, searched and paged in the browser (DataTables).
PAGE_ROWS = 12
#: Cell tag of the cells that go into the report's footer (the method notes).
FOOTER_TAG = "method-notes"
#: How many runs the index page's KPI history shows.
HISTORY_RUNS = 8


def load_text(folder: Path = TEXT_DIR) -> dict[str, dict[str, str]]:
    """Every generated word, from text/*.yaml (common.yaml plus one file per stage): key -> {en, zh}.
    A key defined in two files is an error, so one place holds each word."""
    import yaml

    text: dict[str, dict[str, str]] = {}
    for path in sorted(folder.glob("*.yaml")):
        for key, entry in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).items():
            if key in text:
                raise ValueError(f"{path.name}: text key {key!r} is already defined in another file")
            text[key] = entry
    return text


TEXT: dict[str, dict[str, str]] = load_text()


def t(key: str, language: str = "en") -> str:
    """The report text for `key` in `language` (English when a translation is missing)."""
    entry = TEXT.get(key, {})
    return entry.get(language) or entry.get("en") or key


def say(key: str, language: str = "en", **values: object) -> str:
    """A generated sentence: the `key` template in `language`, filled with `values`."""
    return t(key, language).format(**values)


def number(value: float, decimals: int = 0) -> str:
    return f"{value:,.{decimals}f}"


def money(value: float, currency: str) -> str:
    return f"{currency} {value:,.0f}"


_NUMBER = re.compile(r"^(?:[A-Z]{3}\s)?([+\-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s?(%|×|x)?$")


def parse_number(text: str) -> tuple[float, str] | None:
    """The number a formatted report value shows, and its suffix ('%', '×' or ''): '5,000' ->
    (5000, ''), 'USD 1,234' -> (1234, ''), '43.4%' -> (43.4, '%'). None when the value is not
    one number (a date range, a model name, '14 days')."""
    match = _NUMBER.match(str(text).strip())
    if not match:
        return None
    return float(match.group(1).replace(",", "").replace("−", "-")), match.group(2) or ""


# --- KPI cards, findings, captions, headings, tables (for the notebooks) ----------------------

@dataclass(frozen=True)
class Card:
    """A KPI card: a label, a formatted value, an optional note (definition, period change), and
    the change against the previous run with its direction ('up', 'down', 'flat'; set by the
    report export, which knows the previous run)."""

    label: str
    value: str
    note: str = ""
    change: str = ""
    direction: str = ""
    previous: str = ""


ARROWS = {"up": "▲", "down": "▼", "flat": "▬"}


def change_html(card: Card) -> str:
    """The change line of a card (empty when there is no change to show)."""
    if not card.change:
        return ""
    title = f' title="{html.escape(card.previous)}"' if card.previous else ""
    return (f'<div class="change {html.escape(card.direction)}"{title}>'
            f'<span class="arrow" aria-hidden="true">{ARROWS.get(card.direction, "")}</span> {html.escape(card.change)}</div>')


def cards_html(cards: Sequence[Card]) -> str:
    """KPI cards as HTML (no script): label, value, change against the previous run, note."""
    items = "".join(
        f'<div class="crm-card"><div class="label">{html.escape(c.label)}</div>'
        f'<div class="value">{html.escape(c.value)}</div>' + change_html(c)
        + (f'<div class="note">{html.escape(c.note)}</div>' if c.note else "") + "</div>"
        for c in cards
    )
    return f'<div class="crm-cards">{items}</div>'


def cards(items: Sequence[Card]) -> HTML:
    """KPI cards for a notebook's summary."""
    return HTML(cards_html(items))


def findings(lines: Sequence[str], language: str = "en") -> HTML:
    """Three to five findings in plain words, as a highlighted list."""
    body = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return HTML(f'<div class="crm-findings"><strong>{html.escape(t("findings", language))}</strong><ul>{body}</ul></div>')


def caption(text: str) -> HTML:
    """A caption under a chart or table: what to see in it."""
    return HTML(f'<p class="crm-caption">{html.escape(text)}</p>')


def heading(key: str, language: str = "en", level: int = 2, **fields: object) -> HTML:
    """A section heading in the report language (the table of contents is built from these)."""
    return HTML(f"<h{level}>{html.escape(say(key, language, **fields))}</h{level}>")


def paragraphs(keys: Sequence[str], language: str = "en", **fields: object) -> HTML:
    """Paragraphs of generated text (method notes, explanations) in the report language."""
    return HTML("".join(f"<p>{html.escape(say(key, language, **fields))}</p>" for key in keys))


def _order_key(text: str) -> str:
    parsed = parse_number(text)
    return "" if parsed is None else repr(parsed[0])


def numeric_columns(text) -> set[int]:
    """Positions of the columns of a frame of strings whose filled cells are mostly numbers."""
    out = set()
    for i in range(len(text.columns)):
        values = [v for v in text.iloc[:, i] if str(v).strip()]
        numbers = sum(parse_number(v) is not None for v in values)
        if numbers and numbers * 2 >= len(values):
            out.add(i)
    return out


def table_html(frame, max_rows: int = 30, page_rows: int = PAGE_ROWS) -> str:
    """A table for a report: no index, at most `max_rows` rows, numeric columns right-aligned
    (class `num`). Tables with more than `page_rows` rows get the class `crm-datatable` (the
    report sorts, searches and pages them), and their numeric cells a `data-order` so that
    '1,234' and 'USD 5,000' sort as numbers. A cut table says so under it (`crm-truncated`,
    worded by the export)."""
    shown = frame.head(max_rows)
    page = "" if len(shown) <= page_rows else " crm-datatable"
    text = shown.astype("string").fillna("") if len(shown.columns) else shown
    numeric = numeric_columns(text)
    head = "".join(('<th class="num">' if i in numeric else "<th>") + f"{html.escape(str(c))}</th>"
                   for i, c in enumerate(shown.columns))
    rows = []
    for values in text.itertuples(index=False):
        cells = "".join(
            (f'<td class="num" data-order="{_order_key(v)}">' if page else '<td class="num">') + f"{html.escape(str(v))}</td>"
            if i in numeric else f"<td>{html.escape(str(v))}</td>" for i, v in enumerate(values))
        rows.append(f"<tr>{cells}</tr>")
    body = (f'<table class="dataframe crm-table{page}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')
    if len(frame) > max_rows:
        body += (f'<p class="crm-truncated" data-shown="{len(shown)}" data-total="{len(frame)}">'
                 f"{len(shown)} / {len(frame)}</p>")
    return body


def table(frame, max_rows: int = 30) -> HTML:
    """A table for a report (`table_html`): no index, at most `max_rows` rows; long tables are
    sortable, searchable and paged in the exported report."""
    return HTML(table_html(frame, max_rows))


# --- stage summaries, previous runs, changes ---------------------------------------------------

@dataclass(frozen=True)
class StageSummary:
    """What a stage's report opens with, and what the index page shows of it."""

    cards: list[Card]
    findings: list[str]


def publish(run_dir: str | Path, stage: str, summary: StageSummary) -> None:
    """Save a stage's summary for the index page and the next run's comparison (summary/<stage>.json)."""
    from crmbook import store

    store.write_stage_summary(run_dir, stage, {
        "cards": [{"label": c.label, "value": c.value, "note": c.note} for c in summary.cards],
        "findings": list(summary.findings)})


def summary_cards(summary: Mapping) -> list[Card]:
    """The cards of a saved stage summary (also reads the older [label, value] pairs)."""
    out = []
    for item in summary.get("cards", []):
        if isinstance(item, Mapping):
            out.append(Card(str(item.get("label", "")), str(item.get("value", "")), str(item.get("note", ""))))
        else:
            out.append(Card(str(item[0]), str(item[1])))
    return out


def read_summaries(run_dir: Path) -> dict[str, dict]:
    """Every stage summary of a run folder: stage -> {cards, findings}."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((Path(run_dir) / "summary").glob("*.json"))}


_RUN_ID = re.compile(r"^\d{8}-\d{6}-(?P<scenario>.+?)(?:-\d+)?$")  # as crmbook.performance.scenario_of


def scenario_of(run_id: str) -> str | None:
    """The params-file stem in a run id `YYYYmmdd-HHMMSS-<stem>[-n]` (None for other names)."""
    match = _RUN_ID.match(run_id)
    return match.group("scenario") if match else None


def earlier_runs(reports_dir: Path, run_id: str) -> list[Path]:
    """The successful runs in `reports_dir` before `run_id`, of the same params file, oldest first
    (failed, partial and hidden folders and `latest` are left out; the params file is the stem
    in the run id, `YYYYmmdd-HHMMSS-<stem>[-n]`)."""
    scenario = scenario_of(run_id)
    found = []
    if not Path(reports_dir).is_dir():
        return found
    for folder in sorted(Path(reports_dir).iterdir(), key=lambda p: p.name):
        name = folder.name
        if (name.startswith(".") or name.endswith(".failed") or name == "latest" or folder.is_symlink()
                or not folder.is_dir() or name >= run_id or scenario_of(name) != scenario
                or not (folder / "summary").is_dir()):
            continue
        found.append(folder)
    return found


def card_change(current: Card, previous: Card | None, language: str = "en") -> Card:
    """`current` with its change against the same card of the previous run: relative change for
    counts and money, percentage points for shares; direction up, down or flat. Unchanged when
    either value is not a number or their units differ."""
    if previous is None:
        return current
    now, before = parse_number(current.value), parse_number(previous.value)
    if now is None or before is None or now[1] != before[1]:
        return current
    diff = now[0] - before[0]
    if now[1] == "%":
        change = f"{diff:+.1f} {t('unit_pts', language)}"
        flat = abs(diff) < 0.05
    elif before[0] != 0:
        rel = diff / abs(before[0])
        change = f"{rel:+.1%}"
        flat = abs(rel) < 0.0005
    else:
        change = f"{diff:+,g}"
        flat = diff == 0
    direction = "flat" if flat else ("up" if diff > 0 else "down")
    text = t("change_none", language) if flat else say("card_change", language, change=change.replace("-", "−"))
    return replace(current, change=text, direction=direction,
                   previous=say("card_previous", language, value=previous.value))


def changes_against(summary: Mapping | None, previous: Mapping | None, language: str = "en") -> dict[str, Card]:
    """Label -> card with its change against the previous run's card of the same label."""
    if not summary:
        return {}
    before = {c.label: c for c in summary_cards(previous or {})}
    return {c.label: card_change(c, before.get(c.label), language) for c in summary_cards(summary)}


@dataclass(frozen=True)
class HistoryRow:
    """One KPI across runs: stage, label, the formatted value in each run (None: not in that run)."""

    stage: str
    label: str
    values: tuple[str | None, ...]


def kpi_history(runs: Sequence[tuple[str, Mapping[str, Mapping]]]) -> list[HistoryRow]:
    """The numeric KPI cards of each run (run id, stage -> summary), oldest run first: one row per
    (stage, label) found in the last run, in report order. Cards that are not one number (a date
    range, a model name) are left out."""
    if not runs:
        return []
    by_run = [{(stage, c.label): c.value for stage, s in summaries.items() for c in summary_cards(s)}
              for _, summaries in runs]
    last_stage_cards = [(stage, c) for stage, s in sorted(runs[-1][1].items()) for c in summary_cards(s)]
    return [HistoryRow(stage, c.label, tuple(values.get((stage, c.label)) for values in by_run))
            for stage, c in last_stage_cards if parse_number(c.value) is not None]


# --- the HTML export ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RunInfo:
    """What every report of a run shows in its header and footer."""

    run_id: str
    title: str
    language: str = "en"
    as_of: str | None = None
    run_date: str = ""
    params_file: str = ""
    version: str = ""
    sources: tuple[tuple[str, str], ...] = ()
    previous_run: str | None = None
    workbook: str | None = None
    dictionary: bool = False


def exporter() -> HTMLExporter:
    """An HTML exporter without code, prompts or parameter cells, that references nothing online."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    remove = TagRemovePreprocessor(remove_cell_tags={"parameters", "injected-parameters", "remove-cell"}, enabled=True)
    exp = HTMLExporter(template_name="crmbook", extra_template_basedirs=[str(TEMPLATES)],
                       exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    exp.register_preprocessor(remove, enabled=True)
    return exp


def _strip_noise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop stderr streams (warnings, progress bars) from outputs: reports show results only."""
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb


def caption_alt_texts(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Give every chart (PNG output) an alternative text: the caption that follows it in its cell,
    else the heading before it (output metadata `crmbook_alt`, used by the template)."""
    from bs4 import BeautifulSoup

    last_heading = ""
    for cell in nb.cells:
        outputs = cell.get("outputs", []) if cell.get("cell_type") == "code" else []
        for i, output in enumerate(outputs):
            text = str(output.get("data", {}).get("text/html", ""))
            if "<h2" in text or "<h3" in text:
                last_heading = BeautifulSoup(text, "html.parser").get_text(" ", strip=True)
            if "image/png" not in output.get("data", {}):
                continue
            alt = last_heading
            for later in outputs[i + 1:]:
                html_text = str(later.get("data", {}).get("text/html", ""))
                if "crm-caption" in html_text:
                    alt = BeautifulSoup(html_text, "html.parser").get_text(" ", strip=True)
                    break
            output.setdefault("metadata", {})["crmbook_alt"] = alt
    return nb


def title_cell(nb: nbformat.NotebookNode) -> tuple[str, str] | None:
    """The notebook's title and lead sentence, when its first cell is a markdown '# Title' cell."""
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.lstrip().startswith("# "):
        return None
    head, _, rest = first.source.lstrip().partition("\n")
    return head[2:].strip(), " ".join(rest.split())


def _uses_datatables(nb: nbformat.NotebookNode) -> bool:
    return any("crm-datatable" in str(o.get("data", {}).get("text/html", ""))
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def datatables_language(language: str) -> dict:
    """DataTables' interface words in the report language."""
    return {"search": t("dt_search", language), "info": t("dt_info", language), "infoEmpty": t("dt_info_empty", language),
            "infoFiltered": t("dt_info_filtered", language), "zeroRecords": t("dt_zero", language),
            "emptyTable": t("dt_zero", language), "lengthMenu": "_MENU_",
            "paginate": {"first": "«", "last": "»", "next": "›", "previous": "‹"},
            "aria": {"paginate": {"first": t("dt_first", language), "last": t("dt_last", language),
                                  "next": t("dt_next", language), "previous": t("dt_previous", language)}}}


def html_lang(language: str) -> str:
    """The HTML lang attribute of a report language ('zh' -> 'zh-CN': simplified glyph forms)."""
    return {"zh": "zh-CN"}.get(language, language)


def export_html(notebook: Path, html_path: Path, stage: str, info: RunInfo, changes: Mapping[str, Card] | None = None,
                exp: HTMLExporter | None = None) -> Path:
    """Render an executed notebook to a standalone HTML report (see the module docstring).
    `changes`: label -> card with its change against the previous run (`changes_against`)."""
    import nbformat

    nb = caption_alt_texts(_strip_noise(nbformat.read(notebook, as_version=4)))
    found = title_cell(nb)
    if found:
        nb.cells = nb.cells[1:]
    name = t(stage, info.language) if stage in TEXT else (found[0] if found else stage)
    lead_key = f"{stage}_lead"
    lead = t(lead_key, info.language) if lead_key in TEXT else (found[1] if found else "")
    nb.metadata["title"] = f"{name} · {info.title}"
    tables = _uses_datatables(nb)
    resources = {
        "crmbook": info, "crmbook_stage": stage, "crmbook_name": name, "crmbook_lead": lead,
        "crmbook_css": (TEMPLATES / "crmbook.css").read_text(encoding="utf-8"),
        "crmbook_t": lambda key, **values: say(key, info.language, **values),
        "crmbook_datatables": tables,
        "crmbook_dt_js": (STATIC / "datatables" / "dataTables.min.js").read_text(encoding="utf-8") if tables else "",
        "crmbook_dt_css": (STATIC / "datatables" / "dataTables.dataTables.min.css").read_text(encoding="utf-8") if tables else "",
        "crmbook_dt_language": json.dumps(datatables_language(info.language), ensure_ascii=False),
    }
    exp = exp or exporter()
    exp.language_code = html_lang(info.language)
    body, _ = exp.from_notebook_node(nb, resources=resources)
    html_path.write_text(finish_report(body, info.language, changes or {}), encoding="utf-8")
    return html_path


def finish_report(page: str, language: str, changes: Mapping[str, Card]) -> str:
    """The last touches that need the rendered page: heading ids and the table of contents
    (`nav.crm-toc`, from the h2 and h3 headings of the body), each card's change against the
    previous run, the footer's method notes (cells tagged `method-notes`), the words under a cut
    table."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page, "html.parser")
    body = soup.find(class_="crm-body")
    for anchor in soup.select("a.anchor-link"):
        anchor.decompose()
    toc = soup.select_one("nav.crm-toc ol")
    if body is not None and toc is not None:
        for n, head in enumerate(body.find_all(["h2", "h3"]), start=1):
            head["id"] = f"s{n}"
            item = soup.new_tag("li", attrs={"class": f"toc-{head.name}"})
            link = soup.new_tag("a", href=f"#s{n}")
            link.string = head.get_text(" ", strip=True)
            item.append(link)
            toc.append(item)
    for card in soup.select(".crm-card"):
        label = card.select_one(".label")
        changed = changes.get(label.get_text(strip=True)) if label is not None else None
        if changed is not None and changed.change and card.select_one(".change") is None:
            card.select_one(".value").insert_after(BeautifulSoup(change_html(changed), "html.parser"))
    notes = soup.select_one(".crm-method-notes")
    if notes is not None:
        for cell in soup.select(f".celltag_{FOOTER_TAG}"):
            notes.append(cell.extract())
        if not notes.find(True):
            notes.decompose()
    for cut in soup.select("p.crm-truncated"):
        cut.string = say("table_truncated", language, shown=cut["data-shown"], total=cut["data-total"])
    return str(soup)


# --- the index page ----------------------------------------------------------------------------

def _short_run(run_id: str) -> str:
    """'20261124-071827-default' -> '2026-11-24 07:18' (the run id when it has no time stamp)."""
    match = re.match(r"^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})\d{2}", run_id)
    return f"{match[1]}-{match[2]}-{match[3]} {match[4]}:{match[5]}" if match else run_id


def skip_text(reason: str, language: str = "en") -> str:
    """A stage's skip reason in the report language (the runner words it in English)."""
    match = re.match(r"^no input: needs (?:a|an) (.+?) table, and the params have none$", reason)
    if match:
        return say("skip_no_input", language, tables=match[1].replace(" or ", " / "))
    if reason == "no input: needs an input table, and the params have none":
        return t("skip_no_input_any", language)
    match = re.match(r"^needs stage (\S+), which was skipped$", reason)
    if match:
        return say("skip_needs_stage", language, stage=t(match[1], language))
    return reason


def write_index(run_dir: Path, manifest: dict, summaries: Mapping[str, Mapping], language: str = "en",
                previous: Mapping[str, Mapping] | None = None, previous_run: str | None = None,
                history: Sequence[tuple[str, Mapping[str, Mapping]]] = (), workbook: str | None = None,
                dictionary: bool = False) -> Path:
    """The run's index.html: status, each stage's headline KPIs (with their change against the
    previous run's `previous` summaries) and findings, links to the reports, the KPI history over
    the earlier runs in `history` (run id, summaries; oldest first) and this one, run metadata."""
    from markupsafe import Markup

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    stage_cards = {}
    for stage, summary in summaries.items():
        before = {c.label: c for c in summary_cards((previous or {}).get(stage, {}))}
        stage_cards[stage] = [card_change(c, before.get(c.label), language) for c in summary_cards(summary)]
    shown = list(history)[-(HISTORY_RUNS - 1):]
    rows = kpi_history([*shown, (manifest["run_id"], summaries)]) if summaries else []
    runs = [rid for rid, _ in shown] + [manifest["run_id"]]
    page = env.get_template("run_index.html.j2").render(
        manifest=manifest, summaries=summaries, stage_cards=stage_cards, language=html_lang(language),
        t=lambda key, **values: say(key, language, **values), cards_html=lambda items: Markup(cards_html(items)),
        reason=lambda text: skip_text(text, language), history=rows, history_runs=[_short_run(r) for r in runs],
        history_ids=runs, previous_run=previous_run, workbook=workbook, dictionary=dictionary,
        run_date=run_date(dt.datetime.fromisoformat(manifest["started"])) if manifest.get("started") else "", params_name=Path(str(manifest.get("params_file", ""))).name,
        css=(TEMPLATES / "crmbook.css").read_text(encoding="utf-8"),
    )
    path = run_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def run_date(started: dt.datetime) -> str:
    """A run's start time for the report header: '2026-11-24 07:18 UTC'."""
    return started.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

