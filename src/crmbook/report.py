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

TEXT: dict[str, dict[str, str]] = {
    "rows_read": {"en": "Rows read", "zh": "读取行数"},
    "rows_kept": {"en": "Rows kept", "zh": "保留行数"},
    "rows_quarantined": {"en": "Rows quarantined", "zh": "隔离行数"},
    "sources": {"en": "Source files", "zh": "源文件"},
    "customers": {"en": "Customers", "zh": "客户数"},
    "orders": {"en": "Orders", "zh": "订单数"},
    "revenue": {"en": "Net revenue", "zh": "净收入"},
    "date_range": {"en": "Date range", "zh": "日期范围"},
    "tables": {"en": "Tables", "zh": "数据表"},
    "findings": {"en": "Findings", "zh": "主要发现"},
    "status": {"en": "Status", "zh": "状态"},
    "succeeded": {"en": "succeeded", "zh": "成功"},
    "failed": {"en": "failed", "zh": "失败"},
    "skipped": {"en": "skipped", "zh": "跳过"},
    "stage": {"en": "Stage", "zh": "阶段"},
    "duration": {"en": "Duration", "zh": "耗时"},
    "report": {"en": "Report", "zh": "报告"},
    "headline": {"en": "Headline", "zh": "要点"},
    "run": {"en": "Run", "zh": "运行"},
    "as_of": {"en": "Data as of", "zh": "数据截至"},
    "manifest": {"en": "Manifest (inputs, outputs, versions)", "zh": "清单（输入、输出、版本）"},
    "rows_per_table": {"en": "Rows read per table", "zh": "各数据表读取行数"},
    "rows": {"en": "rows", "zh": "行"},
    "table": {"en": "table", "zh": "数据表"},
    "removed_by_reason": {"en": "Rows removed by cleaning rule", "zh": "各清洗规则移除的行数"},
    "monthly_revenue": {"en": "Net revenue per month after cleaning", "zh": "清洗后每月净收入"},
    "month": {"en": "Month", "zh": "月份"},
    "f_read": {"en": "{rows} rows were read from {files} file(s) into {tables} table(s); no row is dropped at ingestion.",
               "zh": "从 {files} 个文件读取了 {rows} 行，进入 {tables} 张数据表；导入阶段不丢弃任何行。"},
    "f_encoding": {"en": "{file} is not UTF-8: it was decoded as {encoding} (detected automatically).",
                   "zh": "{file} 不是 UTF-8 编码：已自动识别为 {encoding} 并解码。"},
    "f_span": {"en": "Transactions as read run from {first} to {last} and name {customers} customers.",
               "zh": "读取的交易记录时间范围为 {first} 至 {last}，涉及 {customers} 位客户。"},
    "f_pii": {"en": "Names were dropped and e-mails and phone numbers replaced by salted hashes on the way in.",
              "zh": "导入时已删除姓名，电子邮件和电话号码已替换为加盐哈希值。"},
    "f_kept": {"en": "Cleaning kept {kept} of {rows} transaction rows ({share}); {removed} were quarantined with a reason.",
               "zh": "清洗后保留 {rows} 行交易记录中的 {kept} 行（{share}）；{removed} 行已附原因隔离。"},
    "f_top_rule": {"en": "The largest removal was {rule}: {n} rows.", "zh": "移除最多的规则是 {rule}：{n} 行。"},
    "f_refunds": {"en": "{n} refund or cancellation rows were netted into their orders; {cancelled} order lines that netted to zero were removed.",
                  "zh": "{n} 行退款或取消记录已冲抵到原订单；冲抵后金额为零的 {cancelled} 行订单已移除。"},
    "f_rewritten": {"en": "{n} values were rewritten to one format or spelling (dates in other formats, categories with stray spaces or case).",
                    "zh": "{n} 个值已统一格式或写法（其他格式的日期、带多余空格或大小写不一的类别）。"},
    "f_clean_span": {"en": "Clean data: {customers} customers placed {orders} orders worth {revenue} between {first} and {last}.",
                     "zh": "清洗后数据：{customers} 位客户在 {first} 至 {last} 期间下了 {orders} 笔订单，金额 {revenue}。"},
    "01_ingestion": {"en": "01 Ingestion", "zh": "01 数据导入"},
    "02_cleaning": {"en": "02 Cleaning", "zh": "02 数据清洗"},
    "03_segmentation": {"en": "03 Segmentation", "zh": "03 客户分群"},
    "04_clv": {"en": "04 Customer lifetime value", "zh": "04 客户终身价值"},
    "05_attribution": {"en": "05 Channel attribution", "zh": "05 渠道归因"},
    "06_performance": {"en": "06 Performance", "zh": "06 绩效评估"},
}


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
