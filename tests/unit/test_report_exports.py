"""Exports for BI tools and Excel (crmbook.exports): the data dictionary and the workbook."""
from __future__ import annotations

import pandas as pd
import pytest
from openpyxl import load_workbook

from crmbook import exports


@pytest.fixture
def tables(tmp_path):
    folder = tmp_path / "tables"
    (folder / "audiences").mkdir(parents=True)
    pd.DataFrame({"period": ["2024-11-01", "2024-12-01"], "kpi": ["revenue", "orders"], "value": [1234.5, 10.0],
                  "previous": [None, 9.0], "change_abs": [None, 1.0], "change_rel": [None, 0.111111]}
                 ).to_csv(folder / "kpis.csv", index=False)
    pd.DataFrame({"model": ["A", "B"], "converged": [True, False], "n_params": [4, 5], "message": ["ok", "a, \"quoted\" note"]}
                 ).to_csv(folder / "clv_holdout_metrics.csv", index=False)
    for name in ("champions", "at_risk"):
        pd.DataFrame({"customer_id": ["C1"], "segment": [name], "r_score": [5]}).to_csv(folder / "audiences" / f"{name}.csv", index=False)
    pd.DataFrame({"x": [1]}).to_parquet(folder / "clean_x.parquet")
    return folder


def test_every_csv_column_gets_type_unit_and_meaning(tables):
    entries = exports.dictionary(tables, "en", "EUR")
    assert list(entries["file"].unique()) == ["clv_holdout_metrics.csv", "kpis.csv", "audiences/*.csv"]
    row = entries.set_index(["file", "column"])
    assert tuple(row.loc[("kpis.csv", "period")]) == ("date", "date (YYYY-MM-DD)", "Period (its first day)")
    assert tuple(row.loc[("kpis.csv", "value")])[:2] == ("number", "unit of the KPI (count, money in EUR, or fraction 0–1)")
    assert row.loc[("clv_holdout_metrics.csv", "converged"), "type"] == "true/false"
    assert row.loc[("clv_holdout_metrics.csv", "n_params"), "type"] == "integer"
    assert row.loc[("audiences/*.csv", "r_score"), "unit"] == "score (1 = lowest)"
    assert exports.undocumented(tables) == []


def test_an_undocumented_column_is_reported(tables):
    pd.DataFrame({"segment": ["a"], "brand_new_column": [1]}).to_csv(tables / "segment_profiles.csv", index=False)
    assert exports.undocumented(tables) == ["segment_profiles.csv: brand_new_column"]
    entries = exports.dictionary(tables, "zh")
    assert entries.set_index("column").loc["brand_new_column", "meaning"] == "（尚未说明）"


def test_data_dictionary_readme_in_the_report_language(tables):
    path = exports.write_data_dictionary(tables, "zh", "CNY")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# 数据字典")
    assert "金额单位为 CNY" in text
    for section in ("## kpis.csv", "## clv_holdout_metrics.csv", "## audiences/*.csv"):
        assert section in text
    assert "| `change_rel` | 数值 | 比例 0–1 |" in text
    assert exports.write_data_dictionary(tables, "zh", "CNY").read_text(encoding="utf-8") == text  # deterministic


def test_workbook_sheets_equal_their_csvs_and_are_formatted(tables, tmp_path):
    path = exports.write_workbook(tables, tmp_path / "crmbook_run.xlsx", "en", "EUR")
    book = load_workbook(path)
    assert book.sheetnames == ["kpis", "clv_holdout_metrics", exports.DICTIONARY_SHEET]
    for name in ("kpis", "clv_holdout_metrics"):
        sheet = book[name]
        assert sheet.freeze_panes == "A2"
        assert all(cell.font.bold for cell in sheet[1])
        assert sheet.auto_filter.ref.startswith("A1:")
        assert all(sheet.column_dimensions[c.column_letter].width >= 8 for c in sheet[1])
        expected = pd.read_csv(tables / f"{name}.csv")
        actual = pd.read_excel(path, sheet_name=name)
        for column in actual.columns:
            if pd.api.types.is_datetime64_any_dtype(actual[column]):
                actual[column] = actual[column].dt.strftime("%Y-%m-%d")
        pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    assert book["kpis"]["A2"].is_date and book["kpis"]["A2"].number_format == "yyyy-mm-dd"
    dictionary = pd.read_excel(path, sheet_name=exports.DICTIONARY_SHEET)
    pd.testing.assert_frame_equal(dictionary, exports.dictionary(tables, "en", "EUR"), check_dtype=False)


def test_no_workbook_without_a_key_table(tmp_path):
    (tmp_path / "tables").mkdir()
    assert exports.write_workbook(tmp_path / "tables", tmp_path / "x.xlsx") is None
    assert not (tmp_path / "x.xlsx").exists()
