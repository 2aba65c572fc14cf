"""SAM2Long (Ding et al., arXiv 2410.16268): a constrained tree of memory pathways per object.

Re-implemented from the paper (constants and quirks: docs/POLICIES.md); behaviour matched against the
official code (Mark12Ding/SAM2Long @ 7193b77) by running both side by side, never by copying it.

Per object, after its prompt frame ``s``:

* frame ``s + 1`` is a plain SAM 2.1 step (memory = the prompt frame only; argmax-IoU candidate); every pathway
  starts from it with cumulative score 0;
* on every later frame each pathway runs memory attention and the mask decoder with *its own* memory, giving
  P x K (pathway, candidate) branches scored ``S_p + log(iou_pj + 1e-5)``. The P best survive
  (:func:`select_branches`); when every pathway's object score is uncertain (``max_p |o_p| <= uncertainty``),
  branches must differ in their signed IoU rounded to 2 decimals, and pathways left unrepresented contribute
  their best branch if fewer than P distinct ones exist;
* memory of a pathway (:meth:`Sam2LongPolicy.pathway_memory`): the prompt frame plus the newest 6 of its last
  15 *admitted* frames (predicted IoU > ``iou_threshold`` and object logit > 0), the previous frame always
  included, temporal encodings by rank; object pointers from the prompt frame (true distance) and from the
  admitted frames newest first (distance = rank), skipping the oldest one (the official off-by-one, kept);
* memory-attention keys of each memory frame / pointer are scaled by ``linspace(0.95, 1.05)`` assigned by
  the rank of its object score (prompt frame: 10) -- keys only, never values;
* ``offline`` mode outputs, after the last frame, the best pathway traced back; ``online`` mode emits the
  current best pathway's mask on each frame (causal, for streaming; it may disagree with what ``offline``
  would output for the same frame).

Beyond the official code: identical pathways are computed once (before the first uncertain frame all P are the
same), and the distinct ones are handed to the engine as memory reads (:meth:`Sam2LongPolicy.memory_reads`), which
batches them, with every other object's, through memory attention, the decoder and the memory encoder; every
object has its own tree in one run; memory keeps only what a live pathway can still read (dead
lineages are garbage once no pathway references them, and spatial memories outside every pathway's window are
dropped), and offline mode keeps only a compact trace per kept branch (parent link + RLE mask). A new prompt
on an already tracked object restarts its tree (the frames before it keep the best pathway at that moment).

Options: ``num_pathways`` (P, default 3), ``iou_threshold`` (delta_IoU, 0.3 = paper), ``uncertainty``
(delta_conf, 2 = paper), ``preset`` ("paper", "official" = the README / ``vos_inference()`` defaults 0.1 / 2,
"official-cli" = the argparse defaults 0.3 / 1; a preset overrides the two thresholds), ``mode``
("offline" | "online"), ``key_modulation`` (default True), ``record_choices`` (keep per-frame tree decisions in
the state for inspection; off by default as it grows with video length).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vidtrack.engines.sam2.contract import Choice, Decision, DecoderRun, Kept, KeyScale, MemoryRead
from vidtrack.engines.sam2.state import FrameRecord, ObjectTrack, PolicyState
from vidtrack.errors import InputError
from vidtrack.policies.base import MemoryPolicy
from vidtrack.types import TrackingMask

if TYPE_CHECKING:  # torch is imported where it runs: checking --policy sam2long must not import it
    import torch

PRESETS: dict[str, tuple[float, float]] = {
    "paper": (0.3, 2.0),  # arXiv 2410.16268 v3 §4.1
    "official": (0.1, 2.0),  # README commands and tools/vos_inference.py vos_inference() defaults
    "official-cli": (0.3, 1.0),  # tools/vos_inference.py argparse defaults
}
COND_SCORE = 10.0  # object score given to prompt frames / pointers when ranking keys for modulation
KEY_SCALE_RANGE = (0.95, 1.05)
LOG_EPS = 1e-5


# --- the tree step, on plain numbers ------------------------------------------------------------------------
@dataclass(frozen=True)
class Branch:
    """A kept (pathway, candidate) pair: the new pathway continues ``parent`` with candidate ``candidate``."""

    parent: int
    candidate: int
    score: float


def select_branches(
    scores: Sequence[float],
    ious: Sequence[Sequence[float]],
    object_logits: Sequence[float],
    num_pathways: int,
    uncertainty: float,
) -> tuple[list[Branch], bool]:
    """One step of the pathway tree.

    ``scores[p]`` is pathway p's cumulative score, ``ious[p][j]`` candidate j's predicted IoU from pathway p's
    run and ``object_logits[p]`` that run's object logit. Returns the ``num_pathways`` surviving branches,
    best first (index = new pathway id), and whether the step was uncertain.

    Branch score: ``scores[p] + log(iou + 1e-5)``. Order: by score, descending; ties keep (pathway, candidate)
    order (a stable sort), so identical pathways yield identical branches in pathway order. Certain step
    (some ``|logit| > uncertainty``): the top P, duplicates allowed. Uncertain step: the best branch of each
    distinct key ``round(+-iou, 2)`` (sign = object present or not), in score order, up to P; if fewer than P,
    each pathway not yet represented adds its own best branch, in pathway order.
    """
    cands: list[tuple[int, int, float, float]] = []
    for p, (s, row, logit) in enumerate(zip(scores, ious, object_logits, strict=True)):
        for j, iou in enumerate(row):
            iou = float(iou)
            key = round(iou if logit > 0 else -iou, 2)
            cands.append((p, j, float(s + np.log(iou + LOG_EPS)), key))
    ranked = sorted(cands, key=lambda c: c[2], reverse=True)  # stable: ties stay in (p, j) order
    uncertain = max(abs(float(x)) for x in object_logits) <= uncertainty
    if not uncertain:
        kept = ranked[:num_pathways]
    else:
        kept, seen = [], set()
        for c in ranked:
            if c[3] not in seen:
                kept.append(c)
                seen.add(c[3])
            if len(kept) == num_pathways:
                break
        if len(kept) < num_pathways:  # most candidates coincide: keep every pathway alive instead
            present = {c[0] for c in kept}
            for p in range(len(scores)):
                if p not in present:
                    kept.append(next(c for c in ranked if c[0] == p))
                if len(kept) == num_pathways:
                    break
    return [Branch(p, j, s) for p, j, s, _ in kept], uncertain


def rank_weights(scores: Sequence[float], low: float = KEY_SCALE_RANGE[0], high: float = KEY_SCALE_RANGE[1]
                 ) -> torch.Tensor:
    """Key weights by score rank: ``linspace(low, high, n)``, the lowest score getting ``low`` (float32; ties
    in input order)."""
    import torch

    s = torch.tensor([float(x) for x in scores], dtype=torch.float32)
    w = torch.zeros_like(s)
    w[torch.argsort(s, stable=True)] = torch.linspace(low, high, len(scores))
    return w


# --- per-object state ---------------------------------------------------------------------------------------
@dataclass(eq=False)
class Trace:
    """Compact record of one kept branch, for offline back-tracking: its mask (RLE) and its parent."""

    frame_idx: int
    mask: TrackingMask
    parent: Trace | None


@dataclass(eq=False)
class Node:
    """One branch kept on one frame (a node of the memory tree).

    ``admitted`` holds, while the node is a pathway's head, the last (max_ptrs - 1) admitted nodes of its
    lineage, itself included when admitted: all a descendant can read. It is emptied once the node is no longer
    a head, so nothing older stays reachable (dead lineages and old admitted nodes become garbage).
    """

    rec: FrameRecord
    admitted: tuple[Node, ...]
    trace: Trace | None = None


@dataclass
class Pathway:
    head: Node
    score: float


@dataclass
class Sam2LongObjectState(PolicyState):
    pathways: list[Pathway] = field(default_factory=list)  # best first; empty until frame s + 1
    finished: list[Trace] = field(default_factory=list)  # traces frozen by a re-prompt (offline mode)
    choices: list[dict[str, Any]] = field(default_factory=list)  # per-frame decisions (record_choices only)
    runs: int = 0  # pathway forward passes actually computed (after de-duplication)
    runs_naive: int = 0  # passes the official code would run (P per tree frame)

    def distinct_heads(self) -> tuple[list[Node | None], list[int]]:
        """The distinct pathway heads (identical pathways share a head node; ``[None]`` before frame
        ``s + 1``) and, per pathway, the index of its head: read i of a frame is head i's memory."""
        heads: list[Node | None] = [None] if not self.pathways else []
        slot_of: list[int] = []
        for pw in self.pathways:
            idx = next((i for i, h in enumerate(heads) if h is pw.head), None)
            if idx is None:
                heads.append(pw.head)
                idx = len(heads) - 1
            slot_of.append(idx)
        return heads, slot_of

    def live_nodes(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for pw in self.pathways:
            for n in (*pw.head.admitted, pw.head):
                seen.setdefault(id(n), n)
        return list(seen.values())

    def nbytes(self) -> int:
        """Feature memory held by live pathways (maskmem + pointers); traces are counted separately."""
        return sum(n.rec.nbytes() for n in self.live_nodes())


@dataclass
class TreeStep(Decision):
    """SAM2Long's decision on one frame: besides the survivors (one per distinct (parent head, candidate),
    ``keys`` in the same order), what growing the tree needs: the heads read, the P kept branches and the head
    each continues, and what ``record_choices`` logs."""

    heads: list[Node | None]
    keys: list[tuple[int, int]]
    branches: list[Branch]
    parents: list[int]
    first: bool
    uncertain: bool
    object_logits: list[float]


class Sam2LongPolicy(MemoryPolicy):
    name = "sam2long"
    object_score_threshold = 0.0

    def __init__(
        self,
        num_maskmem: int = 7,
        max_obj_ptrs: int = 16,
        *,
        num_pathways: int = 3,
        iou_threshold: float = 0.3,
        uncertainty: float = 2.0,
        preset: str | None = None,
        mode: str = "offline",
        key_modulation: bool = True,
        record_choices: bool = False,
    ) -> None:
        super().__init__(num_maskmem, max_obj_ptrs)
        if preset is not None:
            if preset not in PRESETS:
                raise InputError(f"sam2long preset must be one of {', '.join(PRESETS)}; got {preset!r}")
            iou_threshold, uncertainty = PRESETS[preset]
        if mode not in ("offline", "online"):
            raise InputError(f"sam2long mode must be 'offline' or 'online'; got {mode!r}")
        if int(num_pathways) < 1:
            raise InputError(f"sam2long num_pathways must be >= 1; got {num_pathways}")
        self.num_pathways = int(num_pathways)
        self.iou_threshold = float(iou_threshold)
        self.uncertainty = float(uncertainty)
        self.preset = preset
        self.mode = mode
        self.key_modulation = bool(key_modulation)
        self.record_choices = bool(record_choices)
        self.keeps_branch_masks = mode == "offline"  # offline back-tracking keeps every branch's mask

    def new_object_state(self, object_id: int) -> Sam2LongObjectState:
        return Sam2LongObjectState()

    def result_metadata(self) -> dict[str, Any]:
        return {"sam2long": {"mode": self.mode, "num_pathways": self.num_pathways,
                             "iou_threshold": self.iou_threshold, "uncertainty": self.uncertainty,
                             "key_modulation": self.key_modulation, "preset": self.preset}}

    # --- bookkeeping hooks from the engine ------------------------------------------------------------------
    def record_stored(self, track: ObjectTrack, rec: FrameRecord) -> None:
        if not rec.is_cond:
            return
        st = self.state(track)
        if st.pathways:  # a new prompt on a tracked object: freeze the best lineage, restart the tree
            if st.pathways[0].head.trace is not None:
                st.finished.append(st.pathways[0].head.trace)
            st.pathways = []

    def prune(self, track: ObjectTrack, frame_idx: int) -> None:
        """Spatial memories outside every pathway's window are dropped (pointers and scores stay while a
        pathway's admitted list references the node); unreferenced nodes are freed by Python."""
        st = self.state(track)
        keep: set[int] = set()
        for pw in st.pathways:
            keep.update(id(n) for n in self._spatial(pw.head))
        for n in st.live_nodes():
            if id(n) not in keep:
                n.rec.maskmem_features = None

    # --- memory read ------------------------------------------------------------------------------------------
    def _valid(self, head: Node) -> list[Node]:
        valid = list(head.admitted)
        if not valid or valid[-1] is not head:
            valid.append(head)  # the previous frame is always used
        return valid

    def _spatial(self, head: Node) -> list[Node]:
        return self._valid(head)[-(self.num_maskmem - 1):]

    def pathway_memory(
        self, track: ObjectTrack, frame_idx: int, head: Node | None, max_ptrs: int
    ) -> tuple[list[tuple[int, FrameRecord]], list[tuple[int, FrameRecord]], list[float], list[float]]:
        """Memory entries, pointer entries and their object scores (for key modulation) for one pathway."""
        past = [(t, r) for t, r in track.cond.items() if (t >= frame_idx if track.reverse else t <= frame_idx)]
        memories = [(self.num_maskmem - 1, r) for r in track.cond.values()]
        mem_scores = [COND_SCORE] * len(memories)
        pointers = [(abs(frame_idx - t), r) for t, r in past]
        ptr_scores = [COND_SCORE] * len(pointers)
        if head is None:
            return memories, pointers, mem_scores, ptr_scores
        spatial = self._spatial(head)
        for i, n in enumerate(spatial):  # oldest first; the newest gets slot 0
            assert n.rec.maskmem_features is not None
            memories.append((len(spatial) - 1 - i, n.rec))
            mem_scores.append(n.rec.object_score_logit)
        valid = self._valid(head)
        for t_diff in range(1, max_ptrs):
            if t_diff >= len(valid):  # official off-by-one: the oldest admitted frame gives no pointer
                break
            n = valid[-t_diff]
            pointers.append((t_diff, n.rec))
            ptr_scores.append(n.rec.object_score_logit)
        return memories, pointers, mem_scores, ptr_scores

    # --- the step -------------------------------------------------------------------------------------------
    def state(self, track: ObjectTrack) -> Sam2LongObjectState:
        st = track.policy_state
        if not isinstance(st, Sam2LongObjectState):
            raise TypeError(f"object {track.object_id} holds a {type(st).__name__}, not SAM2Long's state")
        return st

    def memory_reads(self, track: ObjectTrack, frame_idx: int, max_ptrs: int) -> list[MemoryRead]:
        """One read per *distinct* pathway head (identical pathways share a head node and are computed once);
        the engine batches them with every other object's reads."""
        heads, _ = self.state(track).distinct_heads()
        reads = []
        for head in heads:
            memories, pointers, ms, ps = self.pathway_memory(track, frame_idx, head, max_ptrs)
            scale = None
            if head is not None and self.key_modulation and len(memories) > 1:
                scale = KeyScale(list(rank_weights(ms)), list(rank_weights(ps)))
            reads.append(MemoryRead(memories, pointers, scale))
        return reads

    def choose(self, track: ObjectTrack, frame_idx: int, runs: list[DecoderRun], image_size: int) -> TreeStep:
        """The tree step: the P surviving (pathway, candidate) branches, one :class:`Choice` per distinct
        (parent head, candidate), the best branch's first."""
        st = self.state(track)
        heads, slot_of = st.distinct_heads()
        first = not st.pathways
        st.runs += len(heads)
        if first:  # frame s + 1: the plain SAM 2.1 step, shared by every pathway
            r0 = runs[0]
            multimask = r0.masks.size(1) > 1
            k = int(r0.ious[0].argmax().item()) if multimask else 0
            chosen = [Branch(0, k, 0.0)] * self.num_pathways
            parents_idx = [0] * self.num_pathways
            uncertain = False
            st.runs_naive += 1
        else:
            st.runs_naive += len(st.pathways)
            chosen, uncertain = select_branches(
                [pw.score for pw in st.pathways],
                [runs[slot_of[p]].ious[0].tolist() for p in range(len(st.pathways))],
                [runs[slot_of[p]].object_score_logit for p in range(len(st.pathways))],
                self.num_pathways, self.uncertainty,
            )
            parents_idx = [slot_of[b.parent] for b in chosen]
        keys: list[tuple[int, int]] = []
        choices: list[Choice] = []
        for b, h in zip(chosen, parents_idx, strict=True):
            if (h, b.candidate) in keys:
                continue
            keys.append((h, b.candidate))
            # frame s + 1 records the best IoU of the shared run whatever the candidate (as the official code)
            choices.append(Choice(h, b.candidate, iou=float(runs[h].ious[0].max().item()) if first else None))
        return TreeStep(choices, heads, keys, chosen, parents_idx, first, uncertain,
                        [r.object_score_logit for r in runs])

    def remember(
        self, track: ObjectTrack, frame_idx: int, decision: Decision, kept: list[Kept], max_ptrs: int
    ) -> None:
        """Grow the tree: one node per survivor, continuing its parent head's admitted list (admitted itself when
        its IoU > ``iou_threshold`` and its object logit > 0); the pathways move to the new nodes."""
        if not isinstance(decision, TreeStep):
            raise TypeError(f"SAM2Long remembers its own tree steps, not a {type(decision).__name__}")
        st = self.state(track)
        nodes: dict[tuple[int, int], Node] = {}
        for key, k in zip(decision.keys, kept, strict=True):
            parent = decision.heads[key[0]]
            admitted = parent.admitted if parent is not None else ()
            node = Node(k.record, admitted)
            if k.record.iou > self.iou_threshold and k.record.object_score_logit > 0:
                node.admitted = (*admitted, node)[-(max_ptrs - 1):]
            if k.mask is not None:  # offline: the compact trace for back-tracking
                node.trace = Trace(frame_idx, k.mask, parent.trace if parent is not None else None)
            nodes[key] = node
        st.pathways = [Pathway(nodes[(h, b.candidate)], b.score)
                       for b, h in zip(decision.branches, decision.parents, strict=True)]
        for old in decision.heads:  # no longer heads: only a head's admitted list is ever read, and keeping
            if old is not None:  # the old ones would chain every admitted node of the lineage (unbounded)
                old.admitted = ()
        if self.record_choices:
            st.choices.append({"frame": frame_idx, "uncertain": decision.uncertain,
                               "distinct_runs": len(decision.heads),
                               "parents": [b.parent for b in decision.branches],
                               "candidates": [b.candidate for b in decision.branches],
                               "scores": [b.score for b in decision.branches], "first": decision.first,
                               "object_logits": decision.object_logits})

    # --- offline output --------------------------------------------------------------------------------------
    def final_masks(self, track: ObjectTrack) -> dict[int, TrackingMask]:
        if self.mode != "offline":
            return {}
        st = self.state(track)
        heads = list(st.finished)
        if st.pathways and st.pathways[0].head.trace is not None:
            heads.append(st.pathways[0].head.trace)
        out: dict[int, TrackingMask] = {}
        for tr in heads:
            node: Trace | None = tr
            while node is not None:
                out[node.frame_idx] = node.mask
                node = node.parent
        return out
