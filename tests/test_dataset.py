"""search.dataset: the model checked before any trial, the data made ready once, and the start-up line that
says how big the images are and where they live."""
import pytest

from core import imagecache
from core.data import load_data
from helpers import image_csv


@pytest.fixture
def csv(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDTUNE_CACHE", str(tmp_path / "usercache"))
    return image_csv(tmp_path / "data")


def test_the_start_up_line_says_size_and_where_the_images_live(csv):
    from search.dataset import describe

    built = describe(load_data(csv, 16), 16)
    assert "40 images (3 classes), 15.4 kB" not in built  # sizes are MB or GB
    assert built.startswith("birdtune: 40 images (3 classes), 0.0 MB decoded: decoded in ")
    assert f"into the image cache {csv.parent / imagecache.FOLDER}" in built and "kept for the next search" in built
    reused = describe(load_data(csv, 16), 16)
    assert "reused the image cache" in reused and "nothing decoded" in reused
    lazy = describe(load_data(csv, 16, memory_limit_gb=1e-9, image_cache="off"), 1e-9)
    assert "reads them from the image files per batch" in lazy and "image_cache=off" in lazy
    memory = describe(load_data(csv, 16, image_cache="off"), 16)
    assert "decoded into memory" in memory and "object store" in memory


def test_a_model_that_cannot_be_built_is_refused_before_any_trial(csv):
    from core.config import TrainConfig
    from core.errors import ModelError
    from search import dataset

    with pytest.raises(ModelError, match="unknown timm model 'no_such_net'"):
        dataset.check_model(TrainConfig(csv=str(csv), model_name="no_such_net", pretrained=True))
    dataset.check_model(TrainConfig(csv=str(csv), model_name="test_efficientnet", pretrained=False, num_classes=3))


def test_loading_prints_the_line_once_and_returns_the_mapped_images(csv, capsys):
    from core.config import TrainConfig
    from search import dataset

    data = dataset.load(TrainConfig(csv=str(csv), img_size=16))
    assert len(data.table) == 40 and data.how == "built" and data.images.shape[0] == 40
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("birdtune: 40 images (3 classes)")
