"""Constant-velocity Kalman filter on (cx, cy, aspect, height), as SAMURAI uses it.

This is the SORT/DeepSORT box filter: state ``[cx, cy, a, h, vcx, vcy, va, vh]`` with ``a = w / h``,
observation ``[cx, cy, a, h]``, unit time step. Noise scales with the current height: position terms use
``1/20 * h``, velocity terms ``1/160 * h``; the aspect ratio has fixed noise (1e-2 process, 1e-1 measurement,
1e-5 for its velocity). Written from the published equations (SORT, Bewley et al., arXiv 1602.00763; the
constants of SAMURAI's ``sam2/utils/kalman_filter.py``, see docs/POLICIES.md), in plain numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STD_POSITION = 1.0 / 20
STD_VELOCITY = 1.0 / 160

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # x_{t+1} = x_t + v_t
_H = np.eye(4, 8)


@dataclass
class KalmanState:
    mean: np.ndarray  # (8,)
    cov: np.ndarray  # (8, 8)


def xyxy_to_xyah(box: tuple[float, float, float, float] | list[float]) -> np.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, w / h, h); a zero height is taken as 1 (as SAMURAI does)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if h == 0:
        h = 1.0
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, w / h, h])


def xyah_to_xyxy(xyah: np.ndarray) -> tuple[float, float, float, float]:
    cx, cy, a, h = (float(v) for v in xyah[:4])
    w = a * h
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def initiate(measurement: np.ndarray) -> KalmanState:
    h = measurement[3]
    std = [2 * STD_POSITION * h, 2 * STD_POSITION * h, 1e-2, 2 * STD_POSITION * h,
           10 * STD_VELOCITY * h, 10 * STD_VELOCITY * h, 1e-5, 10 * STD_VELOCITY * h]
    return KalmanState(np.r_[measurement, np.zeros(4)], np.diag(np.square(std)))


def predict(state: KalmanState) -> KalmanState:
    h = state.mean[3]
    q = np.diag(np.square([STD_POSITION * h, STD_POSITION * h, 1e-2, STD_POSITION * h,
                           STD_VELOCITY * h, STD_VELOCITY * h, 1e-5, STD_VELOCITY * h]))
    return KalmanState(_F @ state.mean, _F @ state.cov @ _F.T + q)


def update(state: KalmanState, measurement: np.ndarray) -> KalmanState:
    h = state.mean[3]
    r = np.diag(np.square([STD_POSITION * h, STD_POSITION * h, 1e-1, STD_POSITION * h]))
    s = _H @ state.cov @ _H.T + r  # innovation covariance
    gain = np.linalg.solve(s, _H @ state.cov).T  # cov H^T S^-1 (S symmetric)
    mean = state.mean + gain @ (measurement - _H @ state.mean)
    cov = state.cov - gain @ s @ gain.T
    return KalmanState(mean, cov)


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Plain box IoU (no +1 pixel convention); 0 when ``b`` is the empty box (0, 0, 0, 0)."""
    if tuple(b) == (0, 0, 0, 0):
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union != 0 else 0.0
