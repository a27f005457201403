"""Report text: every generated word exists in English and Chinese, in one place."""
import re
import string

import pytest

from crmbook import report


@pytest.mark.parametrize("key", sorted(report.TEXT))
def test_every_key_has_english_and_chinese_with_the_same_fields(key):
    entry = report.TEXT[key]
    assert set(entry) == {"en", "zh"}, key
    fields = [{f for _, f, _, _ in string.Formatter().parse(entry[lang]) if f} for lang in ("en", "zh")]
    assert fields[0] == fields[1], f"{key}: placeholders differ between en and zh"
    assert re.search(r"[\u4e00-\u9fff]", entry["zh"]) or entry["zh"] == entry["en"], f"{key}: zh is not Chinese"


def test_a_key_defined_twice_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("x: {en: a, zh: 甲}\n")
    (tmp_path / "b.yaml").write_text("x: {en: b, zh: 乙}\n")
    with pytest.raises(ValueError, match="already defined"):
        report.load_text(tmp_path)


def test_say_fills_the_template_in_the_language():
    assert report.say("f_top_rule", "zh", rule="r", n="3") == "移除最多的规则是 r：3 行。"
    assert report.t("no such key") == "no such key"
