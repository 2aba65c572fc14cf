"""The fast module forwards (vidtrack.engines.sam2.fast_modules) against the transformers modules they replace:
same weights, random inputs. The image encoder, position encodings and memory encoder reorder no floating-point
operation and must be bit-identical; memory attention computes RoPE as one complex product (Meta's formula),
which may round differently from transformers' five-pass formula where the CPU fuses multiply-adds, so it is
held to 1e-5 (it is bit-identical on the development machine). A whole engine run gives the same masks."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from transformers.models.sam2.modeling_sam2 import Sam2HieraDetModel, Sam2MultiScaleAttention
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoMemoryAttention, Sam2VideoRoPEAttention

from vidtrack.engines.sam2.engine import Sam2Engine
from vidtrack.engines.sam2.fast_modules import (
    FastMemoryAttention,
    FastMultiScaleAttention,
    FastRoPEAttention,
    install_fast_modules,
    restore_stock_modules,
)
from vidtrack.engines.sam2.weights import random_sam2_model, sam2_config, with_image_size
from vidtrack.policies.base import MemoryPolicy
from vidtrack.types import Prompt

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair():
    """hiera-tiny (heads 1-8, window padding at the last stage) at 128 px: stock model and a fast copy."""
    stock = random_sam2_model(with_image_size(sam2_config("tiny"), 128), seed=3).eval()
    fast = copy.deepcopy(stock)
    assert install_fast_modules(fast) > 0
    restore_stock_modules(stock)  # a model is never modified by the test's own engine runs
    return stock, fast


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_install_swaps_every_replaced_module_and_is_idempotent(pair):
    stock, fast = pair
    kinds = {type(m) for m in fast.modules()}
    assert FastMultiScaleAttention in kinds and FastRoPEAttention in kinds and FastMemoryAttention in kinds
    assert Sam2MultiScaleAttention not in kinds and Sam2VideoRoPEAttention not in kinds
    assert install_fast_modules(fast) == 0
    assert {type(m) for m in stock.modules()} >= {Sam2MultiScaleAttention, Sam2VideoMemoryAttention,
                                                   Sam2HieraDetModel}


@torch.inference_mode()
def test_image_encoder_equal(pair):
    stock, fast = pair
    x = torch.randn(2, 3, 128, 128, generator=_gen(0))
    a = stock.get_image_features(x, return_dict=True)
    b = fast.get_image_features(x, return_dict=True)
    for u, v in zip([*a.fpn_hidden_states, *a.fpn_position_encoding],
                    [*b.fpn_hidden_states, *b.fpn_position_encoding], strict=True):
        assert torch.equal(u, v)
    c = fast.get_image_features(x, return_dict=True)  # cached tables reused
    assert all(torch.equal(u, v) for u, v in zip(b.fpn_hidden_states, c.fpn_hidden_states, strict=True))


def test_hiera_pos_embed_follows_its_parameters(pair):
    """The cached position embedding is rebuilt when the parameters change (e.g. weights loaded later)."""
    _, fast = pair
    model = copy.deepcopy(fast)
    hiera = model.vision_encoder.backbone
    with torch.inference_mode():
        before = hiera._get_pos_embed((32, 32)).clone()
        with torch.no_grad():
            hiera.pos_embed.add_(1.0)
        after = hiera._get_pos_embed((32, 32))
        expected = Sam2HieraDetModel._get_pos_embed(hiera, (32, 32))
    assert not torch.equal(before, after)
    assert torch.equal(after, expected)


@pytest.mark.parametrize("batch,frames,pointers", [(1, 7, 16), (2, 3, 4), (1, 1, 0)])
@torch.inference_mode()
def test_memory_attention_equal(pair, batch, frames, pointers):
    stock, fast = pair
    g = _gen(batch * 100 + frames)
    hw = 8 * 8
    n = frames * hw + pointers * 4  # a pointer is split into 4 tokens of 64 channels
    cur, cur_pos = torch.randn(hw, batch, 256, generator=g), torch.randn(hw, batch, 256, generator=g)
    mem, mem_pos = torch.randn(n, batch, 64, generator=g), torch.randn(n, batch, 64, generator=g)
    a = stock.memory_attention(cur, mem, cur_pos, mem_pos, pointers * 4)
    b = fast.memory_attention(cur, mem, cur_pos, mem_pos, pointers * 4)
    assert a.shape == b.shape
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_rope_attention_with_transformers_tables_equal(pair):
    """Other callers (SAM2Long's key-weighted memory attention) pass transformers' (cos, sin) pair."""
    stock, fast = pair
    g = _gen(7)
    layer_s, layer_f = stock.memory_attention.layers[0], fast.memory_attention.layers[0]
    rope = stock.memory_attention.rotary_emb(torch.empty(0), stock.memory_attention.position_ids)
    q = torch.randn(1, 1, 64, 256, generator=g)
    k, v = torch.randn(1, 1, 3 * 64 + 8, 64, generator=g), torch.randn(1, 1, 3 * 64 + 8, 64, generator=g)
    a, _ = layer_s.cross_attn_image(query=q, key=k, value=v, position_embeddings=rope, num_k_exclude_rope=8)
    b, _ = layer_f.cross_attn_image(query=q, key=k, value=v, position_embeddings=rope, num_k_exclude_rope=8)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_memory_encoder_equal(pair):
    stock, fast = pair
    g = _gen(11)
    feats, masks = torch.randn(2, 256, 8, 8, generator=g), torch.randn(2, 1, 128, 128, generator=g)
    (fa, pa), (fb, pb) = stock.memory_encoder(feats, masks), fast.memory_encoder(feats, masks)
    assert torch.equal(fa, fb) and torch.equal(pa, pb)


def _track(model, frames, boxes, *, stock: bool):
    """Logits, IoUs and object scores of every object on every frame of one engine run."""
    eng = Sam2Engine(model)  # installs the fast modules
    if stock:
        assert restore_stock_modules(model) > 0
    policy = MemoryPolicy(eng.num_maskmem, eng.max_obj_ptrs)
    session = eng.new_session(policy, *frames[0].shape[:2], num_frames=len(frames))
    out = []
    for i, f in enumerate(frames):
        prompts = [Prompt.from_box(0, k + 1, b, fmt="xyxy") for k, b in enumerate(boxes)] if i == 0 else []
        outputs, _ = session.step(i, f, prompts)
        out.append([(o.object_id, o.low_res_logits, o.iou, o.object_score_logit) for o in outputs])
    return out


def test_engine_masks_equal_with_and_without_fast_modules(pair):
    """Ten frames, two objects, the whole engine (memory bank full from frame 7): same logits and masks."""
    stock_model, _ = pair
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(10)]
    boxes = [(10.0, 10.0, 60.0, 70.0), (70.0, 20.0, 120.0, 90.0)]
    slow_model = copy.deepcopy(stock_model)
    fast = _track(copy.deepcopy(stock_model), frames, boxes, stock=False)
    slow = _track(slow_model, frames, boxes, stock=True)
    assert any(type(m) is Sam2MultiScaleAttention for m in slow_model.modules())
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        assert len(a) == len(b) == 2
        for (oid, la, ia, sa), (oid_b, lb, ib, sb) in zip(a, b, strict=True):
            assert oid == oid_b
            torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-4, msg=f"frame {i} object {oid}")
            sure = la.abs() > 1e-3
            assert torch.equal((la > 0)[sure], (lb > 0)[sure]), f"mask differs, frame {i} object {oid}"
            assert abs(ia - ib) < 1e-5 and abs(sa - sb) < 1e-4
