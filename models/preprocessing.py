"""What a model wants from float32 RGB [0, 255] images: scaling, channel order, grayscale (ITU-R BT.601 luma).

``raw``: as given, the contract's; ``0-1``; ``-1-1``; ``caffe``: BGR minus the ImageNet means; ``torch``: [0, 1]
minus the ImageNet mean over its std; ``mean-std``: a contract's own mean and std; ``bgr`` swaps the channels.
"""

from __future__ import annotations

import numpy as np

from faceaudit.errors import FaceauditError

#: Preprocessing a runtime applies to float32 RGB [0, 255] images before the model.
PREPROCESS = ("raw", "0-1", "-1-1", "caffe", "torch")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


#: ITU-R BT.601 luma weights: PIL's ``convert("L")`` and OpenCV's ``COLOR_RGB2GRAY``.
_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_grayscale(images: np.ndarray, method: str = "bt601") -> np.ndarray:
    """float32 RGB ``[n, H, W, 3]`` as one channel ``[n, H, W, 1]``: BT.601 luma rounded to whole levels (as PIL and
    OpenCV store an 8-bit gray image), or the channels' mean."""
    x = np.asarray(images, dtype=np.float32)
    gray = np.rint(x @ _BT601) if method == "bt601" else x.mean(axis=-1)
    return np.clip(gray, 0, 255)[..., None].astype(np.float32)


def preprocess_images(images: np.ndarray, mode: str = "raw", bgr: bool = False, *, channels: int = 3,
                      grayscale: str = "bt601", mean=None, std=None) -> np.ndarray:
    """float32 RGB [0, 255] images as the model wants them (``mode`` one of :data:`PREPROCESS` or ``mean-std``
    with ``mean``/``std`` in 0-255 pixel units; ``channels`` 1 converts to gray first)."""
    x = np.asarray(images, dtype=np.float32)
    if channels == 1:
        x = to_grayscale(x, grayscale)
        bgr = False
    if mode == "mean-std":
        return (x - np.asarray(mean, dtype=np.float32)[:x.shape[-1]]) / np.asarray(std, dtype=np.float32)[:x.shape[-1]]
    if mode == "caffe":
        return x[..., ::-1] - _CAFFE_MEAN_BGR
    if bgr:
        x = x[..., ::-1]
    if mode == "raw":
        return x
    if mode == "0-1":
        return x / 255.0
    if mode == "-1-1":
        return x / 127.5 - 1.0
    if mode == "torch":
        mean, std = (_IMAGENET_MEAN[::-1], _IMAGENET_STD[::-1]) if bgr else (_IMAGENET_MEAN, _IMAGENET_STD)
        return (x / 255.0 - mean) / std
    raise FaceauditError(f"unknown preprocessing {mode!r}; expected one of {', '.join(PREPROCESS)}")
