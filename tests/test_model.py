"""core.model and core.checkpoint: building, grayscale input, head replacement, safe loading."""
import pytest
import torch

from core import checkpoint
from core.checkpoint import CheckpointError
from core.model import ModelError, build_model, classifier_prefix, load_weights


def test_grayscale_uint8_input_is_scaled_and_expanded_on_the_model():
    torch.manual_seed(0)
    m = build_model("test_efficientnet", 6).eval()
    x = torch.randint(0, 256, (2, 1, 32, 64), dtype=torch.uint8)
    out = m(x)
    assert out.shape == (2, 6) and out.dtype == torch.float32 and torch.isfinite(out).all()
    ref = m.model((x.float() / 255).repeat(1, 3, 1, 1))
    assert torch.allclose(out, ref, atol=1e-6)


def test_unknown_model_name():
    with pytest.raises(ModelError, match="unknown timm model 'efficientnet_b99'"):
        build_model("efficientnet_b99", 5)


def test_missing_pretrained_file():
    with pytest.raises(ModelError, match="pretrained_file not found"):
        build_model("test_efficientnet", 5, pretrained_file="/nonexistent/w.safetensors")


def test_head_is_replaced_when_the_class_count_differs(tmp_path):
    torch.manual_seed(0)
    src = build_model("test_efficientnet", 8)
    checkpoint.save(tmp_path / "base.pt", {"model": src.state_dict()})
    torch.manual_seed(1)
    dst = build_model("test_efficientnet", 5, init_checkpoint=str(tmp_path / "base.pt"))
    head = classifier_prefix(dst)
    assert head == "model.classifier"
    for k, v in dst.state_dict().items():
        if k.startswith(head):
            assert v.shape[0] == 5
        else:
            assert torch.equal(v, src.state_dict()[k]), k
    same = build_model("test_efficientnet", 8, init_checkpoint=str(tmp_path / "base.pt"))
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in same.state_dict().items())


def test_head_replacement_works_for_other_timm_heads(tmp_path):
    src = build_model("test_resnet", 4)
    checkpoint.save(tmp_path / "r.pt", {"model": src.state_dict()})
    dst = build_model("test_resnet", 9)
    assert load_weights(dst, str(tmp_path / "r.pt")) is True
    assert dst.eval()(torch.zeros(1, 1, 32, 32, dtype=torch.uint8)).shape == (1, 9)


def test_plain_state_dict_without_prefix_loads(tmp_path):
    src = build_model("test_efficientnet", 3)
    torch.save(src.model.state_dict(), tmp_path / "plain.pt")
    dst = build_model("test_efficientnet", 3)
    assert load_weights(dst, str(tmp_path / "plain.pt")) is False
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())


def test_wrong_architecture_and_foreign_files_are_refused(tmp_path):
    checkpoint.save(tmp_path / "r.pt", {"model": build_model("test_resnet", 3).state_dict()})
    with pytest.raises(ModelError, match="does not fit model"):
        build_model("test_efficientnet", 3, init_checkpoint=str(tmp_path / "r.pt"))
    torch.save(build_model("test_efficientnet", 3), tmp_path / "whole.pth")  # the notebook's format
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        checkpoint.load(tmp_path / "whole.pth")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")
    torch.save({"epoch": 3}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match="not a birdtune checkpoint"):
        checkpoint.load(tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "none.pt")


def test_gradient_checkpointing_switch_trains():
    m = build_model("test_efficientnet", 4, grad_checkpointing=True, drop_path_rate=0.1)
    assert m.model.grad_checkpointing
    m(torch.rand(2, 1, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_pretrained_weights_in_the_local_hugging_face_cache_are_found_offline(tmp_path):
    """What the search checks before Ray starts: cached weights pass, an empty cache offline does not.
    (huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE when imported: a fresh process.)"""
    import os
    import subprocess
    import sys

    import safetensors.torch
    import timm
    from timm.models import get_pretrained_cfg

    repo = get_pretrained_cfg("test_efficientnet").hf_hub_id  # timm/test_efficientnet.r160_in1k
    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    torch.manual_seed(1)
    weights = timm.create_model("test_efficientnet").state_dict()
    code = """if 1:
        import sys, torch
        from core.model import build_model, pretrained_problem
        problem = pretrained_problem("test_efficientnet")
        print("PROBLEM", problem)
        if problem is None:
            m = build_model("test_efficientnet", 4, pretrained=True)  # loads them, the head replaced
            want = torch.load(sys.argv[1])
            print("SAME STEM", torch.equal(m.model.conv_stem.weight, want))
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "stem.pt")], capture_output=True, text=True,
                       env=env, timeout=120)
    assert "PROBLEM HF_HUB_OFFLINE is set and they are not in the local Hugging Face cache" in r.stdout, r.stderr
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    safetensors.torch.save_file(weights, str(folder / "snapshots" / ("0" * 40) / "model.safetensors"))
    torch.save(weights["conv_stem.weight"], tmp_path / "stem.pt")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "stem.pt")], capture_output=True, text=True,
                       env=env, timeout=120)
    assert "PROBLEM None" in r.stdout and "SAME STEM True" in r.stdout, r.stdout + r.stderr


def test_an_init_checkpoint_needs_no_pretrained_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    torch.manual_seed(0)
    src = build_model("test_efficientnet", 3)
    checkpoint.save(tmp_path / "c.pt", {"model": src.state_dict()})
    model = build_model("test_efficientnet", 3, pretrained=True, init_checkpoint=str(tmp_path / "c.pt"))
    assert torch.equal(model.model.conv_stem.weight, src.model.conv_stem.weight)
