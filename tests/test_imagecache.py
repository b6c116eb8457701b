"""The image cache: decoded once into a file beside the data, reused whole, rebuilt when anything it was
made from changes or when it is damaged, atomic, with a fallback folder, and never pickled to trials."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from core import imagecache
from core.data import DataError, DecodedData, decode_images, load_data
from helpers import image_csv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def csv(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDTUNE_CACHE", str(tmp_path / "usercache"))
    return image_csv(tmp_path / "data")


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


def test_built_once_beside_the_data_then_reused_with_the_same_images(csv):
    first = load_data(csv, 16)
    assert first.how == "built" and Path(first.cache.path).parent == csv.parent / imagecache.FOLDER
    assert isinstance(first.images, np.memmap) and first.images.shape == (40, 16, 24) and first.nbytes == 0
    assert first.data_bytes == 40 * 16 * 24
    expected = decode_images(pd.read_csv(csv)["image_path"].map(lambda p: str(csv.parent / p)).tolist(), 16)
    np.testing.assert_array_equal(first.images, expected)
    mtime = os.stat(first.cache.path).st_mtime_ns
    again = load_data(csv, 16)
    assert again.how == "reused" and again.cache.path == first.cache.path
    assert os.stat(first.cache.path).st_mtime_ns == mtime  # not written again
    np.testing.assert_array_equal(again.images, expected)
    assert not again.images.flags.writeable  # mapped read-only: no process can change what others read


def test_a_changed_csv_or_image_rebuilds_and_removes_the_replaced_cache_another_size_keeps_both(csv):
    first = load_data(csv, 16)
    df = pd.read_csv(csv)
    df.loc[0, "label"] = 2
    df.to_csv(csv, index=False)
    second = load_data(csv, 16)
    assert second.how == "built" and second.cache.key != first.cache.key and "replaced 1" in second.note
    assert not Path(first.cache.path).exists()
    img = csv.parent / "img" / "x5.png"
    cv2.imwrite(str(img), np.full((16, 24), 9, np.uint8))
    os.utime(img, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_data(csv, 16)
    assert third.how == "built" and (third.images[5] == 9).all()
    smaller = load_data(csv, 8)  # another image size: another cache, the first one kept
    assert smaller.how == "built" and smaller.images.shape == (40, 8, 12) and Path(third.cache.path).exists()


@pytest.mark.parametrize("damage", ["truncated", "one byte changed", "record missing", "header garbled"])
def test_a_damaged_cache_is_detected_and_rebuilt_never_trusted(csv, damage):
    good = load_data(csv, 16)
    path = Path(good.cache.path)
    expected = np.array(good.images)
    del good
    if damage == "truncated":
        os.truncate(path, path.stat().st_size - 100)
    elif damage == "one byte changed":
        with open(path, "r+b") as fh:
            fh.seek(path.stat().st_size // 2)
            b = fh.read(1)
            fh.seek(-1, 1)
            fh.write(bytes([b[0] ^ 0xFF]))
    elif damage == "record missing":
        path.with_suffix(".json").unlink()
    else:
        with open(path, "r+b") as fh:
            fh.write(b"garbage!")
    again = load_data(csv, 16)
    assert again.how == "built"
    np.testing.assert_array_equal(again.images, expected)


def test_a_writer_killed_mid_write_leaves_nothing_that_is_trusted_and_its_leftover_is_removed(csv):
    script = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from core import data, imagecache
imagecache.CHUNK = 4
slow = data.decode_image
def decode(p, s):
    time.sleep(0.05)
    return slow(p, s)
data.decode_image = decode
data.load_data({str(csv)!r}, 16)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    folder = csv.parent / imagecache.FOLDER
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 2000 for p in folder.glob("*.tmp")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _files(folder)
    assert any(n.endswith(".tmp") for n in left) and not any(n.endswith(".npy") for n in left), left
    again = load_data(csv, 16)
    assert again.how == "built" and not any(n.endswith(".tmp") for n in _files(folder))


def test_two_loads_at_once_decode_once(csv, monkeypatch):
    from core import data

    calls = []
    slow = data.decode_image

    def counting(p, s):
        calls.append(p)
        time.sleep(0.01)
        return slow(p, s)

    monkeypatch.setattr(data, "decode_image", counting)
    got = []
    threads = [threading.Thread(target=lambda: got.append(load_data(csv, 16))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(d.how for d in got) == ["built", "reused"]
    assert len(calls) == 40 + 2  # every image once, plus each load's look at the first image's size


def test_an_unwritable_data_folder_falls_back_to_the_user_cache_folder_and_then_to_memory(csv, tmp_path):
    (csv.parent / imagecache.FOLDER).write_text("a file where the cache folder would go")  # cannot be made
    data = load_data(csv, 16)
    assert data.how == "built" and Path(data.cache.path).parent == tmp_path / "usercache" / "images"
    assert load_data(csv, 16).how == "reused"
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    nowhere = load_data(csv, 16, image_cache=str(blocked / "sub"))
    assert nowhere.how == "memory" and nowhere.cache is None and "cannot be written" in nowhere.note
    np.testing.assert_array_equal(nowhere.images, data.images)


def test_a_folder_without_room_is_passed_over(csv, monkeypatch):
    import shutil

    real = shutil.disk_usage
    beside = csv.parent / imagecache.FOLDER
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1000) if Path(p) == beside else real(p))
    data = load_data(csv, 16)
    assert data.how == "built" and Path(data.cache.path).parent.name == "images"


def test_pickled_data_carries_the_table_and_the_cache_identity_never_the_images(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDTUNE_CACHE", str(tmp_path / "usercache"))
    csv = image_csv(tmp_path / "data", n=60, shape=(64, 128))
    data = load_data(csv, 64)
    blob = pickle.dumps(data)
    assert len(blob) < data.data_bytes / 20, len(blob)
    same = pickle.loads(blob)
    assert isinstance(same.images, np.memmap) and same.images.filename == data.images.filename
    np.testing.assert_array_equal(same.images[[3, 59]], data.images[[3, 59]])

    # another node: the file is not there, the images are -> built there
    os.remove(data.cache.path)
    rebuilt = pickle.loads(blob)
    assert rebuilt.images is not None and Path(rebuilt.cache.path).exists()
    np.testing.assert_array_equal(rebuilt.images[[3, 59]], data.images[[3, 59]])

    # neither the cache nor the images: no images, and training says why in one line
    os.remove(rebuilt.cache.path)
    os.remove(csv.parent / "img" / "x3.png")
    lost = pickle.loads(blob)
    assert lost.images is None and "lacks 1 of the images" in lost.missing
    from core.engine import ready_data as prepare
    from core.config import TrainConfig

    with pytest.raises(DataError, match="has no image cache"):
        prepare(TrainConfig(csv=str(csv), img_size=64), lost)


def test_a_copy_from_another_node_is_checked_before_it_is_published(csv, tmp_path):
    data = load_data(csv, 16)
    ref = data.cache

    def read(offset, n):
        with open(ref.path, "rb") as fh:
            fh.seek(offset)
            return fh.read(n)

    there = tmp_path / "node2"
    got = imagecache.copy_from(read, ref, there, {"csv": str(csv), "img_size": 16})
    assert got.key == ref.key and got.path != ref.path
    np.testing.assert_array_equal(imagecache.open_images(got), data.images)
    assert json.loads(Path(got.path).with_suffix(".json").read_text())["crc"] == ref.crc

    def flipped(offset, n):
        block = bytearray(read(offset, n))
        block[-1] ^= 1
        return bytes(block)

    elsewhere = tmp_path / "node3"
    with pytest.raises(OSError, match="does not match its checksum"):
        imagecache.copy_from(flipped, ref, elsewhere, {})
    assert not any(n.endswith(".npy") for n in _files(elsewhere))


def test_bad_images_are_still_refused_with_one_line_and_leave_no_cache(csv):
    (csv.parent / "img" / "x3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"1 image\(s\) could not be decoded: .*x3.png"):
        load_data(csv, 16)
    cv2.imwrite(str(csv.parent / "img" / "x3.png"), np.zeros((16, 40), np.uint8))
    with pytest.raises(DataError, match="images differ in size after resizing to 16 px"):
        load_data(csv, 16)
    assert not any(n.endswith((".npy", ".tmp")) for n in _files(csv.parent / imagecache.FOLDER))


def test_decoded_data_built_by_hand_still_works():
    images = np.zeros((4, 8, 8), np.uint8)
    table = pd.DataFrame(dict(path=["a"] * 4, label=[0, 1, 0, 1], fold=[0, 0, 1, 1]))
    d = DecodedData(table, images, 2, 8, "x.csv")
    assert d.nbytes == images.nbytes == d.data_bytes and pickle.loads(pickle.dumps(d)).images.shape == (4, 8, 8)


