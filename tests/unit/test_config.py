"""Params validation: every mistake names the file and the key path, in one line."""
import time

import pytest

from crmbook import config
from crmbook.errors import ConfigError
from tests.conftest import ROOT, crmbook, write_params


def test_default_params_validate():
    cfg = config.load(ROOT / "params" / "default.yaml")
    assert cfg.report.language == "en"
    assert cfg.resolve(cfg.data.sources.transactions[0].path) == ROOT / "data" / "raw" / "demo" / "orders.csv"


@pytest.mark.parametrize("yaml_text, key, words", [
    ("segmentaton: {}\n", "segmentaton", "unknown key"),
    ("data:\n  sources:\n    transactions:\n      - path: x.csv\n        colums: {}\n", "data.sources.transactions[0].colums", "unknown key"),
    ("report:\n  language: fr\n", "report.language", "'en' or 'zh'"),
    ("run:\n  analysis_date: yesterday\n", "run.analysis_date", "valid date"),
    ("data:\n  demo: {customers: 10}\n", "data.demo.dir", "required key is missing"),
    ("run: [1, 2]\n", "run", "valid dictionary"),
    ("run:\n  memory_limit: 4 gigs\n", "run.memory_limit", "should match pattern"),
    ("run:\n  memory_limit: \"4GB'; SET threads=99; --\"\n", "run.memory_limit", "should match pattern"),
    ("run:\n  engine: spark\n", "run.engine", "'duckdb' or 'pyspark'"),
    ("run:\n  spark_conf: {spark.hadoop.fs.s3a.secret.key: abc}\n", "run.spark_conf", "looks like a credential"),
    ("run:\n  spark_conf: {fs.azure.account.key.acct.dfs.core.windows.net: abc}\n", "run.spark_conf", "looks like a credential"),
    ("run:\n  spark_conf: {spark.hadoop.javax.jdo.option.ConnectionURL: 'jdbc:mysql://h/db?user=u&password=abc'}\n",
     "run.spark_conf", "looks like a credential"),
    ("run:\n  threads: 0\n", "run.threads", "greater than or equal to 1"),
])
def test_config_errors_name_file_and_key(tmp_path, yaml_text, key, words):
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ")
    assert words in message
    assert "\n" not in message
    if key == "run.spark_conf":
        assert "abc" not in message  # a credential is refused without being echoed


def test_spark_settings_are_text(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("run:\n  spark_conf: {spark.executor.cores: 4, spark.sql.adaptive.enabled: true, "
                    "spark.executor.memory: 8g}\n")
    assert config.load(path).run.spark_conf == {"spark.executor.cores": "4", "spark.sql.adaptive.enabled": "true",
                                                "spark.executor.memory": "8g"}


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("run:\n  currency: [USD\n")
    with pytest.raises(ConfigError, match=r"line \d+: not valid YAML"):
        config.load(path)


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system"])
def test_yaml_python_tags_are_refused_not_run(tmp_path, tag):
    """Params are loaded with yaml.safe_load: a tag that would build a Python object is an error."""
    marker = tmp_path / "ran"
    path = tmp_path / "p.yaml"
    path.write_text(f"run:\n  currency: {tag} [\"touch {marker}\"]\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: line 2: not valid YAML: could not determine a constructor"):
        config.load(path)
    assert not marker.exists()


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        config.load(tmp_path / "nope.yaml")


def test_relative_paths_resolve_against_the_params_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "p.yaml"
    path.write_text("data:\n  sources:\n    transactions:\n      - path: ../orders.csv\n")
    cfg = config.load(path)
    assert cfg.resolve(cfg.data.sources.transactions[0].path) == tmp_path / "orders.csv"


def _assert_fast_one_line_failure(result, seconds, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert seconds < 5, f"took {seconds:.1f} s"
    for word in words:
        assert word in lines[0]


def test_unknown_key_fails_fast_without_traceback(tmp_path, demo_dir):
    params = write_params(tmp_path, demo_dir, **{"cleaning: {}": "cleaning: {dedupe: true}"})
    started = time.perf_counter()
    result = crmbook("run", "--params", str(params), "--reports-dir", str(tmp_path / "reports"))
    _assert_fast_one_line_failure(result, time.perf_counter() - started, str(params), "cleaning.dedupe", "unknown key")
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_missing_input_file_fails_fast_without_traceback(tmp_path, demo_dir):
    params = write_params(tmp_path, demo_dir, **{"/orders.csv": "/orders_2024.csv"})
    started = time.perf_counter()
    result = crmbook("run", "--params", str(params), "--reports-dir", str(tmp_path / "reports"))
    _assert_fast_one_line_failure(result, time.perf_counter() - started, "orders_2024.csv", "file not found")
