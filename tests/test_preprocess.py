"""Plain-torch pre/post-processing equals transformers' torchvision-backed processors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtrack.engines.sam2.preprocess import (
    mask_to_model_input,
    masks_to_video_res,
    preprocess_frame,
    scale_points,
)

pytest.importorskip("torchvision", reason="transformers' SAM 2 processors need torchvision (dev extra)")


@pytest.mark.parametrize(("h", "w"), [(480, 854), (300, 400), (49, 65)])
def test_frames_equal_the_video_processor(h, w):
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    frame = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = Sam2VideoVideoProcessor()(videos=[frame[None]], return_tensors="pt")["pixel_values_videos"][0, 0]
    ours = preprocess_frame(frame, 1024)
    assert ours.shape == ref.shape == (3, 1024, 1024)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)


def test_official_resize_is_pil_then_imagenet_normalisation():
    from PIL import Image

    frame = np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    ours = preprocess_frame(frame, 64, resize="official")
    resized = np.asarray(Image.fromarray(frame).resize((64, 64))).astype(np.float32) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((resized - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5)


def test_masks_and_prompts_equal_the_processor():
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor

    logits = torch.randn(3, 1, 256, 256) * 4
    ref = Sam2ImageProcessor().post_process_masks([logits], original_sizes=[[480, 854]])[0]
    ours = masks_to_video_res(logits, 480, 854)
    assert torch.equal(ref[:, 0], ours)

    mask = np.zeros((480, 854), bool)
    mask[100:300, 200:700] = True
    m = mask_to_model_input(mask, 1024)
    assert m.shape == (1, 1, 1024, 1024) and set(m.unique().tolist()) == {0.0, 1.0}
    np.testing.assert_allclose(scale_points(np.array([[854, 480], [427, 240]]), 480, 854, 1024),
                               [[1024, 1024], [512, 512]])
