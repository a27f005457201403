"""03 segmentation against the demo generator's ground truth: the behavioural clusters recover
the latent segments (`truth.json` customer_segment) of `crmbook.synth.generate(customers=5000,
seed=42, messy=True)` with adjusted Rand index >= 0.8, after ingestion and cleaning of the
messy files, with the default (untuned) settings. A second seed guards against tuning to one."""
import json

import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from crmbook import cleaning, config, segmentation, synth
from tests.conftest import write_params


def _segment(tmp_path, seed: int, method: str = "kmeans"):
    data = synth.generate(tmp_path / "demo", customers=5000, seed=seed, messy=True)
    params = write_params(tmp_path, data)
    text = params.read_text(encoding="utf-8")
    params.write_text(text.replace("segmentation: {}", f"segmentation: {{clusters: {{method: {method}}}}}"), encoding="utf-8")
    cfg = config.load(params)
    run_dir = tmp_path / "run"
    result = segmentation.segment(cfg, run_dir, cleaning.load_clean(cfg, run_dir))
    truth = pd.Series(json.loads((data / "truth.json").read_text(encoding="utf-8"))["customer_segment"])
    return result, truth


@pytest.mark.parametrize("seed", [42, 7])
def test_kmeans_clusters_recover_the_latent_segments(tmp_path, seed):
    result, truth = _segment(tmp_path, seed)
    c = result.customers
    ari = adjusted_rand_score(truth.loc[c["customer_id"]].to_numpy(), c["cluster"].to_numpy())
    assert result.clusters.k == 3, result.clusters.selection
    assert ari >= 0.8, f"ARI {ari:.3f}"
    assert result.clusters.stability >= 0.9
    # the chosen method agrees with the Gaussian mixture, which picks its own k
    assert result.clusters.k_gmm == 3 and result.clusters.agreement_ari >= 0.8


def test_gaussian_mixture_recovers_the_latent_segments(tmp_path):
    result, truth = _segment(tmp_path, 42, "gmm")
    c = result.customers
    ari = adjusted_rand_score(truth.loc[c["customer_id"]].to_numpy(), c["cluster"].to_numpy())
    assert ari >= 0.8, f"ARI {ari:.3f}"
    names = set(result.clusters.names.values())
    assert any(n.startswith("Frequent high spenders") for n in names)
