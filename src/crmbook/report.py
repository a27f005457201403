"""Report building blocks: KPI cards, findings and captions for the notebooks; HTML export
without code (a template extending nbconvert's `lab`, nothing fetched from a network); the
run's index page.

Every word a report generates comes from `TEXT`, in English and Chinese.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import nbformat
from IPython.display import HTML
from jinja2 import Environment, FileSystemLoader, select_autoescape
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor

TEMPLATES = Path(__file__).parent / "templates"

TEXT_DIR = Path(__file__).parent / "text"


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


@dataclass(frozen=True)
class Card:
    """A KPI card: a label, a formatted value and an optional note (change, definition)."""

    label: str
    value: str
    note: str = ""


def cards_html(cards: list[Card]) -> str:
    items = "".join(
        f'<div class="crm-card"><div class="label">{html.escape(c.label)}</div>'
        f'<div class="value">{html.escape(c.value)}</div>'
        + (f'<div class="note">{html.escape(c.note)}</div>' if c.note else "") + "</div>"
        for c in cards
    )
    return f'<div class="crm-cards">{items}</div>'


def cards(items: list[Card]) -> HTML:
    """KPI cards for a notebook's summary."""
    return HTML(cards_html(items))


def findings(lines: list[str], language: str = "en") -> HTML:
    """Three to five findings in plain words, as a highlighted list."""
    body = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return HTML(f'<div class="crm-findings"><strong>{t("findings", language)}</strong><ul>{body}</ul></div>')


def caption(text: str) -> HTML:
    """A caption under a chart or table: what to see in it."""
    return HTML(f'<p class="crm-caption">{html.escape(text)}</p>')


def number(value: float, decimals: int = 0) -> str:
    return f"{value:,.{decimals}f}"


def money(value: float, currency: str) -> str:
    return f"{currency} {value:,.0f}"


def say(key: str, language: str = "en", **values: object) -> str:
    """A generated sentence: the `key` template in `language`, filled with `values`."""
    return t(key, language).format(**values)


@dataclass(frozen=True)
class StageSummary:
    """What a stage's report opens with, and what the index page shows of it."""

    cards: list[Card]
    findings: list[str]


def publish(run_dir: str | Path, stage: str, summary: StageSummary) -> None:
    """Save a stage's summary for the index page (summary/<stage>.json)."""
    from crmbook import store

    store.write_stage_summary(run_dir, stage, {"cards": [[c.label, c.value] for c in summary.cards],
                                               "findings": summary.findings})


def table(frame, max_rows: int = 30) -> HTML:
    """A table for a report: no index, at most `max_rows` rows."""
    return HTML(frame.head(max_rows).to_html(index=False, border=0, classes="dataframe", na_rep=""))


def _strip_noise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop stderr streams (warnings, progress bars) from outputs: reports show results only."""
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb


def exporter() -> HTMLExporter:
    """An HTML exporter without code, prompts or parameter cells, that references nothing online."""
    remove = TagRemovePreprocessor(remove_cell_tags={"parameters", "injected-parameters", "remove-cell"}, enabled=True)
    exp = HTMLExporter(template_name="crmbook", extra_template_basedirs=[str(TEMPLATES)],
                       exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    exp.register_preprocessor(remove, enabled=True)
    return exp


def export_html(notebook: Path, html_path: Path, title: str, language: str = "en", exp: HTMLExporter | None = None) -> Path:
    """Render an executed notebook to a standalone HTML report."""
    nb = _strip_noise(nbformat.read(notebook, as_version=4))
    nb.metadata["title"] = title
    resources = {"crmbook_css": (TEMPLATES / "crmbook.css").read_text(encoding="utf-8"), "language_code": language}
    body, _ = (exp or exporter()).from_notebook_node(nb, resources=resources)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def write_index(run_dir: Path, manifest: dict, summaries: dict[str, dict], language: str = "en") -> Path:
    """The run's index.html: status, each stage's headline KPIs and link, run metadata."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("run_index.html.j2").render(
        manifest=manifest, summaries=summaries, t=lambda key: t(key, language), language=language,
        css=(TEMPLATES / "crmbook.css").read_text(encoding="utf-8"),
    )
    path = run_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
