"""vidtrack reads a Meta checkpoint's architecture from the weights and Meta's yaml model config.

Users of fine-tuned or custom-size SAM 2 models hold a ``.pt`` and the yaml it was trained with. Depth and
width are in the tensor shapes; head counts, global-attention blocks, window sizes and the input size are
only in the yaml, which vidtrack takes explicitly (``load_sam2_model(model_config=...)``) or from
``<checkpoint>.yaml`` beside the file. Checked against the architecture Meta's code builds from the same yaml.
"""

from __future__ import annotations

import shutil

import pytest

from vidtrack import TrackingConfig, create_tracking_loader
from vidtrack.engines.sam2.weights import load_meta_checkpoint, load_sam2_model, read_meta_model_yaml
from vidtrack.errors import WeightsError

from .calibration import OfficialPrompt, save_checkpoint, tiny
from .conftest import ParityRunner, davis_frames, davis_mask
from .harness import Case


def test_custom_hiera_is_read_from_weights_and_yaml(parity):
    official = parity.predictor
    trunk = official.image_encoder.trunk
    cfg = parity.loader.engine.model.config
    hiera = cfg.vision_config.backbone_config
    assert cfg.image_size == official.image_size == 256
    ours = parity.loader.engine.model.vision_encoder.backbone.blocks
    assert len(ours) == len(trunk.blocks) == sum(hiera.blocks_per_stage)
    for i, (a, b) in enumerate(zip(ours, trunk.blocks, strict=True)):  # block by block, as each side builds it
        assert (a.dim, a.dim_out, a.window_size) == (b.dim, b.dim_out, b.window_size), i
        assert a.attn.num_attention_heads == b.attn.num_heads, i
    assert cfg.memory_attention_num_layers == len(official.memory_attention.layers) == 2
    assert cfg.enable_occlusion_spatial_embedding  # SAM 2.1


def test_custom_hiera_without_yaml_says_what_to_do(parity, tmp_path):
    lone = tmp_path / "finetuned.pt"
    shutil.copy(parity.checkpoint, lone)
    with pytest.raises(WeightsError, match=r"custom SAM 2 Hiera .*model's yaml config") as e:
        load_meta_checkpoint(lone)
    assert "\n" not in str(e.value)
    # the same yaml given explicitly loads it (the API's and the CLI's way)
    model = load_sam2_model(size="tiny", hub_id="x", checkpoint_path=lone,
                            model_config=parity.checkpoint.with_suffix(".yaml"))
    assert model.config.image_size == 256
    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(
        device="cpu", checkpoint_path=str(lone), model_config=str(parity.checkpoint.with_suffix(".yaml")))).load()
    assert loader.engine.image_size == 256 and loader.engine.model.config.memory_attention_num_layers == 2
    with pytest.raises(WeightsError, match="model config not found"):
        load_sam2_model(size="tiny", hub_id="x", checkpoint_path=lone, model_config=tmp_path / "nope.yaml")


def test_yaml_of_another_architecture_is_refused(parity, tmp_path):
    other = tmp_path / "tiny.yaml"
    other.write_text("model:\n  image_size: 1024\n  image_encoder:\n    trunk:\n      embed_dim: 96\n"
                     "      num_heads: 1\n      stages: [1, 2, 7, 2]\n      global_att_blocks: [5, 7, 9]\n")
    with pytest.raises(WeightsError, match="embed_dim 96 with stages \\[1, 2, 7, 2\\] but the checkpoint has "
                                           "embed_dim 48"):
        load_meta_checkpoint(parity.checkpoint, model_config=other)


def test_training_config_layout_and_references(tmp_path):
    """Meta's training configs put the model under ``trainer.model`` and refer to ``scratch`` values."""
    y = tmp_path / "train.yaml"
    y.write_text("scratch:\n  resolution: 512\ntrainer:\n  model:\n    image_size: ${scratch.resolution}\n")
    assert read_meta_model_yaml(y) == {"image_size": 512}
    y.write_text("trainer:\n  model:\n    image_size: ${scratch.missing}\n")
    with pytest.raises(WeightsError, match="cannot resolve"):
        read_meta_model_yaml(y)


@pytest.fixture(scope="session")
def parity_tiny256(sam2_official, tmp_path_factory):
    """The released hiera-tiny architecture at 256 px: the input size comes from the yaml alone."""
    arch = tiny(256)
    ckpt = save_checkpoint(arch, tmp_path_factory.mktemp("ckpt-tiny256") / "sam2.1_hiera_t_256.pt")
    return ParityRunner(arch, ckpt)


def test_hiera_tiny_at_another_input_size(parity_tiny256):
    assert parity_tiny256.loader.engine.image_size == 256
    case = Case("car-shadow mask, hiera-tiny 256 px", davis_frames("car-shadow"), 6,
                (OfficialPrompt(0, 1, mask=davis_mask("car-shadow", 0)),))
    report = parity_tiny256.report(case)
    print(report.summary())
    report.assert_parity(0.999)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from vidtrack.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def test_cli_model_config(parity, tmp_path, capsys):
    lone = tmp_path / "finetuned.pt"
    shutil.copy(parity.checkpoint, lone)
    frames = str(davis_frames("car-shadow"))
    base = ["track", frames, "--out", str(tmp_path / "out"), "--checkpoint", str(lone), "--device", "cpu",
            "--box", "313,88,341,193", "--end", "2"]
    code, err = _cli(base, capsys)
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "--model-config" in lines[0], err
    code, err = _cli([*base, "--model-config", str(parity.checkpoint.with_suffix(".yaml"))], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "masks.json").is_file()
