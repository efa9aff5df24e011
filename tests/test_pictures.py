"""Figures 4, 5 and 7 as PNG files of the expected grid sizes, written by the ``pictures``
artifact through the artifact contract, and per-dimension KL checked against the closed form
for Gaussians."""

import json

import pytest
import torch
from PIL import Image

from mmbench.artifacts import write_artifacts
from mmbench.distributions import DiagonalNormal, Factorised, normal_kl
from mmbench.evaluation import EvalContext
from mmbench.testing import check_artifact
from mmbench_pictures import ITEMS, JOINT_SAMPLES, TRAVERSAL_STEPS, Pictures
from mmbench_pictures.divergence import kl_per_dim
from mmbench_pictures.grid import CELL, HEADER, PAD, TEXT_WIDTH

pytestmark = pytest.mark.usefixtures("single_thread")

LATENT = 3


FILES = {"samples_joint.png", "reconstructions.png", "traversal_grey.png", "traversal_colour.png",
         "traversal_caption.png", "kl.png", "kl.json"}


def _context(plugins, digits_data, run_dir):
    dataset = plugins.datasets.get("digits")
    posterior = plugins.posteriors.get("moe")
    torch.manual_seed(0)
    model = posterior.build_model(dataset.modalities_for(digits_data), LATENT).eval()
    return EvalContext(dataset=dataset, data=digits_data, model=model, posterior=posterior,
                       device=torch.device("cpu"), run_dir=run_dir)


@pytest.fixture(scope="module")
def pictures_dir(plugins, digits_data, tmp_path_factory):
    """The folder the artifact wrote, as the runner has it write: <run_dir>/artifacts/pictures/."""
    run_dir = tmp_path_factory.mktemp("run")
    paths = check_artifact(Pictures(), _context(plugins, digits_data, run_dir))
    folder = run_dir / "artifacts" / "pictures"
    assert {p.name for p in paths} == FILES and all(p.parent == folder for p in paths)
    return folder


def expected_size(column_widths, rows):
    """Tiles of fixed size with PAD between and around them, under a header row."""
    width = sum(column_widths) + PAD * (len(column_widths) + 1)
    height = HEADER + PAD + rows * (CELL + PAD) + PAD
    return width, height


def test_joint_samples_grid(pictures_dir):
    # digits: grey and colour images, then a caption drawn as text
    with Image.open(pictures_dir / "samples_joint.png") as im:
        assert im.size == expected_size([CELL, CELL, TEXT_WIDTH], JOINT_SAMPLES)


def test_reconstruction_and_cross_generation_grid(pictures_dir):
    one_of_each = [CELL, CELL, TEXT_WIDTH]  # the data, then decoded from each of 3 sources
    with Image.open(pictures_dir / "reconstructions.png") as im:
        assert im.size == expected_size(one_of_each * 4, ITEMS)


@pytest.mark.parametrize("name,width", [("grey", CELL), ("colour", CELL), ("caption", TEXT_WIDTH)])
def test_traversal_grid_has_a_row_per_latent_dimension(pictures_dir, name, width):
    with Image.open(pictures_dir / f"traversal_{name}.png") as im:
        assert im.size == expected_size([width] * TRAVERSAL_STEPS, LATENT)
        assert im.getextrema() != ((255, 255), (255, 255), (255, 255))  # something was drawn


def test_kl_plot_and_numbers(pictures_dir):
    with Image.open(pictures_dir / "kl.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    kl = json.loads((pictures_dir / "kl.json").read_text())
    assert set(kl["kl_to_prior"]) == {"grey", "colour", "caption", "joint"}
    assert set(kl["symmetric_kl"]) == {"grey,colour", "grey,caption", "colour,caption"}
    assert all(len(v) == LATENT for v in kl["kl_to_prior"].values())


def test_per_dimension_kl_matches_the_gaussian_closed_form():
    torch.manual_seed(0)
    family = DiagonalNormal()
    q = Factorised(family, torch.tensor([[0.5, -1.0, 0.0]]), torch.tensor([[0.3, 1.0, 2.0]]))
    p = Factorised(family, torch.zeros(3), torch.ones(3))
    # normal_kl sums over its last dimension; a trailing singleton keeps one dimension per call
    exact = torch.stack([normal_kl(q.loc[0, d:d + 1], q.scale[0, d:d + 1], p.loc[d:d + 1], p.scale[d:d + 1])
                         for d in range(3)])
    assert torch.allclose(kl_per_dim(q, p, samples=200_000), exact, atol=0.02)


def test_the_runner_lists_the_files_relative_to_the_run(plugins, digits_data, tmp_path):
    """What run.json's ``artifacts`` holds; a stale file of an earlier session is not listed."""
    stale = tmp_path / "artifacts" / "pictures" / "traversal_gone.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    written, errors, skipped = write_artifacts(_context(plugins, digits_data, tmp_path), [Pictures()], plugins)
    assert errors == {} and skipped == {}
    assert written == {"pictures": sorted(f"artifacts/pictures/{name}" for name in FILES)}
    assert not stale.exists()


def test_pictures_is_an_artifact_not_a_metric(plugins):
    assert "pictures" in plugins.artifacts and "pictures" not in plugins.metrics
    from mmbench.errors import MMBenchError
    from mmbench.runner import resolve_metrics

    with pytest.raises(MMBenchError, match="'pictures' is an artifact, not a metric: pass --artifacts pictures"):
        resolve_metrics(plugins, ["latent_acc", "pictures"])
