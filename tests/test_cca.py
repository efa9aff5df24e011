"""Image–language coherence (Table 4): CCA recovers a known correlation from constructed
pairs; the metric runs on digits' captions (FastText), caches what it fits, and is skipped
with a reason where a dataset has no text."""

import sys

import numpy as np
import pytest
import torch

from mmbench.evaluation import EvalContext
from mmbench_cca import ImageLanguageCCA
from mmbench_cca.correlation import cached_cca, fit_cca, pair_correlation
from mmbench_cca.embedding import fit_sentence_embedding

pytestmark = pytest.mark.usefixtures("single_thread")

RHO = np.linspace(0.9, 0.45, 10)


def constructed_pairs(n, rng):
    """Two views whose canonical variates are known: u_i, v_i with corr(u_i, v_i) = RHO[i],
    hidden among independent noise dimensions and mixed by fixed random linear maps."""
    u = rng.standard_normal((n, len(RHO)))
    v = RHO * u + np.sqrt(1 - RHO**2) * rng.standard_normal((n, len(RHO)))
    mix = np.random.default_rng(99)
    x = np.hstack([u, rng.standard_normal((n, 6))]) @ mix.standard_normal((16, 16)) + 3.0
    y = np.hstack([v, rng.standard_normal((n, 4))]) @ mix.standard_normal((14, 20)) - 1.0
    return x, y, u, v


def test_cca_recovers_known_canonical_correlations():
    rng = np.random.default_rng(0)
    x, y, _, _ = constructed_pairs(4000, rng)
    tx, ty, tu, tv = constructed_pairs(3000, rng)
    px, py = fit_cca(x, y, k=len(RHO))
    a, b = px(tx), py(ty)
    found = [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(len(RHO))]
    assert np.allclose(found, RHO, atol=0.04), np.round(found, 3)
    # Table 4's score on the fitted projections equals the score on the true variates.
    assert pair_correlation(a, b) == pytest.approx(pair_correlation(tu, tv), abs=0.03)
    assert pair_correlation(tu, tv) > 0.5


def test_k_is_capped_by_the_dimensions_available_and_independent_views_score_zero():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2000, 3)), rng.standard_normal((2000, 30))
    px, py = fit_cca(x, y, k=40)
    assert px.matrix.shape == (3, 3) and py.matrix.shape == (30, 3)
    tx, ty = rng.standard_normal((2000, 3)), rng.standard_normal((2000, 30))
    assert abs(pair_correlation(px(tx), py(ty))) < 0.05


def test_fits_are_cached_by_content(tmp_path):
    rng = np.random.default_rng(2)
    x, y, _, _ = constructed_pairs(500, rng)
    px, _ = cached_cca(x, y, tmp_path, k=4)
    assert len(list((tmp_path / "cca").glob("*.pt"))) == 1
    again, _ = cached_cca(x, y, tmp_path, k=4)
    np.testing.assert_allclose(again.matrix, px.matrix)
    cached_cca(x + 1e-3, y, tmp_path, k=4)  # other content, another entry
    assert len(list((tmp_path / "cca").glob("*.pt"))) == 2


def test_sentence_embedding_is_the_mean_word_vector(tmp_path):
    sentences = [["a", "red", "seven"], ["a", "blue", "two"], ["the", "red", "two"]] * 20
    words = ["a", "the", "red", "blue", "seven", "two", "unseen"]
    embed = fit_sentence_embedding(sentences, words, tmp_path, vector_size=8, bucket=200, epochs=2)
    vectors = embed([["red"], ["seven"], ["red", "seven"], []])
    np.testing.assert_allclose(vectors[2], (vectors[0] + vectors[1]) / 2)
    assert np.all(vectors[3] == 0) and np.any(vectors[0] != 0)
    again = fit_sentence_embedding(sentences, words, tmp_path, vector_size=8, bucket=200, epochs=2)
    np.testing.assert_array_equal(again.vectors, embed.vectors)  # from the cache


def _digits_ctx(plugins, digits_data, mmbench_home, posterior="moe"):
    dataset = plugins.datasets.get("digits")
    post = plugins.posteriors.get(posterior)
    torch.manual_seed(0)
    model = post.build_model(dataset.modalities, 4).eval()
    return EvalContext(dataset=dataset, data=digits_data, model=model, posterior=post, device=torch.device("cpu"),
                       cache_dir=mmbench_home / "cache")


def test_metric_on_digits_captions(plugins, digits_data, mmbench_home):
    ctx = _digits_ctx(plugins, digits_data, mmbench_home)
    metric = ImageLanguageCCA(k=8, max_train_pairs=600, vector_size=32, bucket=2000, epochs=3)
    assert metric.skip_reason(ctx) is None
    values = {v.name: v.value for v in metric.evaluate(ctx)}
    for pair in ("grey,caption", "colour,caption"):
        assert f"cca_data[{pair}]" in values and f"cca_joint[{pair}]" in values
    for a in ("grey", "colour"):
        assert f"cca_cross[{a}->caption]" in values and f"cca_cross[caption->{a}]" in values
    assert all(-1 <= v <= 1 for v in values.values())
    # The data's own pairs correlate (captions name the colours and the digit); an untrained
    # model's generations do not.
    assert values["cca_data[colour,caption]"] > 0.1
    assert values["cca_data[colour,caption]"] > abs(values["cca_cross[colour->caption]"]) + 0.05


def test_skipped_with_a_reason_without_text(plugins, digits_data, mmbench_home):
    ctx = _digits_ctx(plugins, digits_data, mmbench_home)

    ctx.modalities = ctx.modalities[:2]  # what a metric reads: the modalities of the data, grey and colour
    assert "text modality" in ImageLanguageCCA().skip_reason(ctx)


def test_skipped_with_the_install_line_without_gensim(plugins, digits_data, mmbench_home, monkeypatch):
    ctx = _digits_ctx(plugins, digits_data, mmbench_home)
    monkeypatch.setitem(sys.modules, "gensim", None)  # import gensim now raises ImportError
    reason = ImageLanguageCCA().skip_reason(ctx)
    assert reason is not None and "pip install" in reason and "gensim" in reason
