"""Faster drop-in forwards for the transformers SAM 2 modules the engine calls every frame.

transformers' ``Sam2VideoModel`` computes the same function as Meta's ``SAM2Base`` but does more work per
frame on a CPU (on stock modules vidtrack cost 1.05-1.09x Meta's predictor per frame, with these 0.90-0.97x:
BENCHMARKS.md; an op count showed the causes):

* **Hiera blocks** pad every map before cutting it into windows, also when no padding is needed (a full
  copy per block), and their attention (``Sam2MultiScaleAttention``) computes ``softmax(q @ k^T)`` of every
  window and then throws it away (the output comes from the attention interface after it): one small batched
  matmul and a softmax per block and frame, 12 per frame in hiera-tiny, none of which reaches the output.
* **Sine position encodings** of the FPN levels and of memories are rebuilt on every call (``arange``,
  ``sin``/``cos``, ``stack``, ``cat``): transformers caches one shape only (``lru_cache(maxsize=1)``) and the
  neck asks for three shapes in turn, so the cache never hits.
* **Memory attention** rebuilds its RoPE tables (``cos``/``sin`` of the position grid) every frame, repeats
  them for the keys of every memory frame in every layer, rotates with ``neg`` + ``stack`` + ``cat`` passes
  over the (up to 29k x 256) keys, and adds the memory position encodings to the keys once per layer.

The classes below subclass those modules and change only *how* the same values are computed: tables that do
not change between frames are built once and cached per shape; attention calls
``torch.nn.functional.scaled_dot_product_attention`` directly; RoPE rotates channel pairs by one complex
product, as Meta's ``apply_rotary_enc`` does (transformers spends five passes over the keys on it); the keys'
``memory + position`` sum is formed once for all layers. One step goes beyond both codes: memory
cross-attention has one head and 64-channel memory values projected to 256, so on a CPU it attends over the
64-channel values and projects the output (:func:`_attend_in_blocks`), which makes the products with the
memory tokens 4x narrower (Meta's predictor and transformers project every memory token first).

The image encoder, position encodings and memory encoder are bit-identical to the replaced modules; memory
attention equals them to float rounding (the RoPE product rounds like Meta's, not like transformers', and the
value projection comes after the attention): tests/test_fast_modules.py, and the parity tests against Meta's
predictor run on these modules.

:func:`install_fast_modules` swaps the classes of the model's own module instances (weights untouched); the
transformers package itself is never patched, and a model without the call runs the stock code.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.sam2.modeling_sam2 import (
    Sam2HieraDetModel,
    Sam2MultiScaleAttention,
    Sam2MultiScaleBlock,
    Sam2SinePositionEmbedding,
    do_pool,
    window_partition,
    window_unpartition,
)
from transformers.models.sam2_video.modeling_sam2_video import (
    Sam2VideoMemoryAttention,
    Sam2VideoPositionEmbeddingSine,
    Sam2VideoRoPEAttention,
)


def _fresh() -> Any:
    """A context that makes cached tables ordinary tensors (not inference tensors), so a table built under
    ``torch.inference_mode`` can later be used in a plain ``no_grad`` or autograd context. Nothing under
    ``torch.compile``, which traces the stock computation instead of the caches (see :func:`_compiling`)."""
    return contextlib.nullcontext() if _compiling() else torch.inference_mode(False)


def _compiling() -> bool:
    """True while ``torch.compile`` traces: the caches below are plain Python side effects (dicts on the module,
    keys from storage pointers) that dynamo cannot trace, so a compiled graph computes the tables itself."""
    return bool(torch.compiler.is_compiling())


# --- Hiera attention --------------------------------------------------------------------------------------

class FastMultiScaleAttention(Sam2MultiScaleAttention):
    """``Sam2MultiScaleAttention`` without its unused ``softmax(q @ k^T)``; SDPA called directly.

    Same projections, query pooling and attention call (transformers' SDPA interface calls the same
    ``scaled_dot_product_attention`` with the same arguments), so the output is bit-identical."""

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        batch_size, height, width, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch_size, height * width, 3, self.num_attention_heads, -1)
        query, key, value = torch.unbind(qkv, 2)
        if self.query_stride:
            query = do_pool(query.reshape(batch_size, height, width, -1), self.query_stride)  # type: ignore[arg-type]
            height, width = query.shape[1:3]
            query = query.reshape(batch_size, height * width, self.num_attention_heads, -1)
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=self.scale
        )
        out = out.transpose(1, 2).contiguous().reshape(batch_size, height, width, -1)
        return self.proj(out)


def _window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """transformers' ``window_partition`` without its ``F.pad`` when nothing needs padding (a pad of zero still
    copies the whole map: 5 ms a block at 1024 px); the same windows otherwise."""
    b, h, w, c = x.shape
    if h % window or w % window:
        return window_partition(x, window)
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c), (h, w)


class FastMultiScaleBlock(Sam2MultiScaleBlock):
    """``Sam2MultiScaleBlock.forward`` with :func:`_window_partition`; otherwise the same operations."""

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.layer_norm1(hidden_states)
        if self.dim != self.dim_out:
            residual = do_pool(self.proj(hidden_states), self.query_stride)  # type: ignore[arg-type]
        window_size = self.window_size
        if window_size > 0:
            height, width = hidden_states.shape[1], hidden_states.shape[2]
            hidden_states, pad_hw = _window_partition(hidden_states, window_size)
        hidden_states = self.attn(hidden_states=hidden_states, **kwargs)
        if self.query_stride:
            window_size = self.window_size // self.query_stride[0]  # type: ignore[index]
            height, width = residual.shape[1:3]
            pad_hw = (height + (-height) % window_size, width + (-width) % window_size)
        if self.window_size > 0:
            hidden_states = window_unpartition(hidden_states, window_size, pad_hw, (height, width))
        hidden_states = residual + hidden_states
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class CachedPosEmbedHiera(Sam2HieraDetModel):
    """Hiera with its input position embedding (the background grid interpolated bicubically to the patch grid,
    plus the tiled window embedding) computed once per grid, stored channels-last contiguous, and recomputed
    only when the two parameters change (their version counters and storage are part of the cache key)."""

    def _get_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        if torch.is_grad_enabled() or _compiling():  # training: the embedding must stay in the graph
            return super()._get_pos_embed(hw)
        p, w = self.pos_embed, self.pos_embed_window
        key = (tuple(hw), str(p.device), p.dtype, p._version, w._version, p.data_ptr(), w.data_ptr())
        cached = self.__dict__.get("_pos_cache")
        if cached is None or cached[0] != key:
            with _fresh(), torch.no_grad():
                pe = super()._get_pos_embed(hw).contiguous()
            cached = (key, pe)
            self.__dict__["_pos_cache"] = cached
        return cached[1]


# --- sine position encodings ---------------------------------------------------------------------------------

class _CachedSine:
    """Mixin for transformers' two sine position encodings (same ``forward`` signature): the encoding of a
    (shape, device, dtype) is computed once by the stock function and reused."""

    def forward(self, shape: torch.Size, device: Any, dtype: torch.dtype, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        stock = super().forward  # type: ignore[misc]
        if mask is not None or _compiling():
            return stock(shape, device, dtype, mask)
        cache: dict[tuple[Any, ...], torch.Tensor] = self.__dict__.setdefault("_pe_cache", {})
        key = (tuple(shape), str(device), dtype)
        pe = cache.get(key)
        if pe is None:
            with _fresh():
                pe = stock(shape, device, dtype).contiguous()
            cache[key] = pe
        return pe


class CachedSinePositionEmbedding(_CachedSine, Sam2SinePositionEmbedding):
    """The FPN levels' sine encoding, computed once per (shape, device, dtype)."""


class CachedVideoSinePositionEmbedding(_CachedSine, Sam2VideoPositionEmbeddingSine):
    """The memories' sine encoding (memory encoder), computed once per (shape, device, dtype)."""


# --- memory attention ---------------------------------------------------------------------------------------

class RopeTables:
    """RoPE tables of one query grid as complex rotations ``cos + i sin`` (1, L, d/2), and their repeats for the
    keys of several memory frames, built once.

    transformers' tables repeat every angle twice (``repeat_interleave(2)``) and rotate with
    ``x * cos + rotate_pairwise(x) * sin``; the pair (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) is one
    complex product, which is how Meta's ``apply_rotary_enc`` computes it (``torch.view_as_complex``): one
    fused pass instead of five, equal to transformers' to float rounding (<= 1e-6 here)."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        with _fresh():
            self.freqs = torch.complex(cos[..., 0::2].float(), sin[..., 0::2].float()).contiguous()
        self._repeats: dict[int, torch.Tensor] = {1: self.freqs}

    @property
    def length(self) -> int:
        return int(self.freqs.shape[-2])

    def for_keys(self, n: int) -> torch.Tensor:
        """Rotations for ``n`` rotated keys (a whole number of memory frames, one grid each), cached."""
        r, rest = divmod(n, self.length)
        if rest:
            raise ValueError(f"{n} rotated keys are not a whole number of {self.length}-token memory frames")
        freqs = self._repeats.get(r)
        if freqs is None:
            with _fresh():
                freqs = self.freqs.repeat(1, r, 1)
            self._repeats[r] = freqs
        return freqs


def _rotate(x: torch.Tensor, freqs: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate channel pairs of ``x`` (..., L, d) by ``freqs`` (1, L, d/2) in float32 (transformers and Meta
    upcast), into ``out`` (float32, same shape) if given."""
    if x.device.type not in ("cpu", "cuda"):  # no complex kernels (MPS): transformers' real formula
        cos = torch.view_as_real(freqs)[..., 0].repeat_interleave(2, dim=-1)
        sin = torch.view_as_real(freqs)[..., 1].repeat_interleave(2, dim=-1)
        xf = x.float()
        pairs = xf.unflatten(-1, (-1, 2))
        rot = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        res = xf * cos + rot * sin
        return res if out is None else out.copy_(res)
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    if out is None:
        return torch.view_as_real(xc * freqs).flatten(-2)
    torch.mul(xc, freqs, out=torch.view_as_complex(out.unflatten(-1, (-1, 2))))
    return out


ATTENTION_BLOCK_QUERIES = 128
"""Queries per block in :func:`_attend_in_blocks`: a block's scores are 128 x N floats (15 MiB for the 28,736
memory tokens of one 1024 px frame)."""


def _attend_in_blocks(q: torch.Tensor, k: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(scale * q k^T) x`` for (B, 1, L, d) queries, (B, 1, N, d) keys and (B, 1, N, c) values, a block
    of queries at a time.

    Used for memory cross-attention with the values *before* their projection: one head, so ``softmax(S) (x W^T
    + b) = (softmax(S) x) W^T + b``, and the products with the N memory tokens run on c = 64 channels instead of
    256. On a CPU, ``scaled_dot_product_attention`` is slower with value channels unlike the keys' (and cannot
    skip the projection of all N values), so the scores are formed block by block: two GEMMs and a softmax per
    block, the scores never held whole (measured at one thread: 1024 px 1318 -> 1080 ms a layer, 512 px 85 ->
    61 ms, 256 px 6.1 -> 3.4 ms, including the value projection). Equal to the fused path to float rounding."""
    out = torch.empty((*q.shape[:-1], x.shape[-1]), dtype=x.dtype, device=x.device)
    keys_t = k.transpose(-1, -2)
    for i in range(0, q.shape[-2], ATTENTION_BLOCK_QUERIES):
        scores = torch.matmul(q[..., i:i + ATTENTION_BLOCK_QUERIES, :], keys_t).mul_(scale)
        torch.matmul(torch.softmax(scores, dim=-1), x, out=out[..., i:i + ATTENTION_BLOCK_QUERIES, :])
    return out


class FastRoPEAttention(Sam2VideoRoPEAttention):
    """``Sam2VideoRoPEAttention`` with cached complex RoPE tables and SDPA called directly.

    ``position_embeddings`` is a :class:`RopeTables` (fast path) or transformers' ``(cos, sin)`` pair (any
    other caller, e.g. the key-weighted memory attention of SAM2Long)."""

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        position_embeddings: RopeTables | tuple[torch.Tensor, torch.Tensor],
        num_k_exclude_rope: int = 0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        tables = position_embeddings if isinstance(position_embeddings, RopeTables) else RopeTables(
            *position_embeddings)
        batch_size, point_batch_size = query.shape[:2]
        new_shape = (batch_size * point_batch_size, -1, self.num_attention_heads, self.head_dim)
        q = self.q_proj(query).view(*new_shape).transpose(1, 2)
        k = self.k_proj(key).view(*new_shape).transpose(1, 2)

        q = _rotate(q, tables.freqs).type_as(q)
        n_rot = k.shape[-2] - num_k_exclude_rope
        if n_rot > 0:
            freqs_k = tables.for_keys(n_rot) if self.rope_k_repeat and n_rot != q.shape[-2] else tables.freqs
            k_out = torch.empty(k.shape, dtype=torch.float32, device=k.device)
            _rotate(k[..., :n_rot, :], freqs_k, out=k_out[..., :n_rot, :])
            if num_k_exclude_rope:
                k_out[..., n_rot:, :] = k[..., n_rot:, :]
            k = k_out.to(k.dtype)
        if self._folds_values(q, value):
            # one head, values projected up from fewer channels (memory: 64 -> 256): attend over the raw
            # values and project the output instead (softmax rows sum to 1, so the bias passes through)
            out = F.linear(_attend_in_blocks(q, k, value.reshape(q.shape[0], 1, -1, value.shape[-1]),
                                             self.scaling), self.v_proj.weight, self.v_proj.bias)
        else:
            v = self.v_proj(value).view(*new_shape).transpose(1, 2)
            dropout = self.dropout_p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scaling)
        out = out.transpose(1, 2).contiguous().reshape(
            batch_size, point_batch_size, -1, self.num_attention_heads * self.head_dim)
        return self.o_proj(out), None

    def _folds_values(self, q: torch.Tensor, value: torch.Tensor) -> bool:
        """Whether :func:`_attend_in_blocks` applies: memory cross-attention (one head, ``kv_in_dim`` 64 below
        the 256 channels), on a CPU (a GPU's fused SDPA kernel is faster than any split), in float32 (under
        bfloat16 autocast the fused kernel keeps its softmax in float32; the blocks would not), not training,
        not traced by ``torch.compile``."""
        return (self.num_attention_heads == 1 and self.v_proj.in_features < self.v_proj.out_features
                and value.device.type == "cpu" and q.dtype == value.dtype == torch.float32
                and not self.training and not _compiling())


class FastMemoryAttention(Sam2VideoMemoryAttention):
    """``Sam2VideoMemoryAttention`` with the RoPE tables built once per query grid, and the keys' ``memory +
    position`` formed once for all layers (transformers forms it in every layer)."""

    def rope_tables(self, device: torch.device) -> RopeTables:
        cache: dict[str, RopeTables] = {} if _compiling() else self.__dict__.setdefault("_rope_cache", {})
        tables = cache.get(str(device))
        if tables is None:
            with _fresh(), torch.no_grad():
                pos = self.position_ids.to(device)
                cos, sin = self.rotary_emb(torch.empty(0, device=device), pos)
            tables = RopeTables(cos, sin)
            cache[str(device)] = tables
        return tables

    def forward(
        self,
        current_vision_features: torch.Tensor,
        memory: torch.Tensor,
        current_vision_position_embeddings: torch.Tensor | None = None,
        memory_posision_embeddings: torch.Tensor | None = None,
        num_object_pointer_tokens: int = 0,
        key_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """transformers' forward; ``key_scale`` (B, N), when given, multiplies every layer's cross-attention key
        per memory token, ``key = scale * (memory + pos)`` with the value left ``memory``: SAM2Long's key
        modulation (Ding et al., 2024; ``MemoryAttentionLayer._forward_ca`` in its official code)."""
        output = current_vision_features
        if current_vision_position_embeddings is not None:
            output = output + 0.1 * current_vision_position_embeddings
        output = output.transpose(0, 1)
        memory = memory.transpose(0, 1).unsqueeze(1)
        assert memory_posision_embeddings is not None
        keys = memory + memory_posision_embeddings.transpose(0, 1).unsqueeze(1)
        if key_scale is not None:
            keys = keys * key_scale.reshape(key_scale.shape[0], 1, -1, 1)
        tables = self.rope_tables(output.device)
        layers: list[Any] = list(self.layers)
        for layer in layers:
            queries = output.unsqueeze(1) if output.ndim == 3 else output
            q = layer.layer_norm1(queries)
            q, _ = layer.self_attn(query=q, key=q, value=q, position_embeddings=tables)
            queries = queries + layer.dropout1(q)
            q = layer.layer_norm2(queries)
            q, _ = layer.cross_attn_image(query=q, key=keys, value=memory, position_embeddings=tables,
                                          num_k_exclude_rope=num_object_pointer_tokens)
            queries = queries + layer.dropout2(q)
            q = layer.layer_norm3(queries)
            q = layer.linear2(layer.dropout(layer.activation(layer.linear1(q))))
            output = queries + layer.dropout3(q)
        return self.layer_norm(output).transpose(0, 1)


# --- the seam ------------------------------------------------------------------------------------------------

_SWAPS: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (Sam2HieraDetModel, CachedPosEmbedHiera),
    (Sam2MultiScaleAttention, FastMultiScaleAttention),
    (Sam2MultiScaleBlock, FastMultiScaleBlock),
    (Sam2SinePositionEmbedding, CachedSinePositionEmbedding),
    (Sam2VideoPositionEmbeddingSine, CachedVideoSinePositionEmbedding),
    (Sam2VideoRoPEAttention, FastRoPEAttention),
    (Sam2VideoMemoryAttention, FastMemoryAttention),
)


def _swap_classes(model: nn.Module, swaps: dict[type[nn.Module], type[nn.Module]]) -> int:
    """Give every module of ``model`` whose exact type is a key of ``swaps`` the class it maps to, in place;
    returns how many were swapped."""
    n = 0
    for module in model.modules():
        new = swaps.get(type(module))
        if new is not None:
            module.__class__ = new
            n += 1
    return n


def install_fast_modules(model: nn.Module) -> int:
    """Give every module of ``model`` that has a faster subclass above that class, in place (parameters,
    buffers and configuration are the instance's own and stay as they are). Returns how many were swapped;
    idempotent. Exact-type matches only, so a module already replaced or customised is left alone."""
    return _swap_classes(model, dict(_SWAPS))


def restore_stock_modules(model: nn.Module) -> int:
    """Undo :func:`install_fast_modules` (for before/after measurements in one process). Returns how many."""
    return _swap_classes(model, {fast: orig for orig, fast in _SWAPS})
