r"""Data for generative modelling: the 2-d toy sets of :mod:`controlsamp.targets.datasets`, scikit-learn's 8x8
digits, and a user's ``.npy`` file, each as a seeded train / test split (:func:`load_data`).

**Digits** (:func:`digits`): the 1797 handwritten 8x8 images of scikit-learn's ``load_digits`` (the UCI
"optical recognition of handwritten digits" test set, shipped with scikit-learn: no download), 64 pixels of
integer intensity 0..16 (:data:`DIGITS_LEVELS` = 17 levels). A model learns them in :math:`[-1, 1]^{64}` through
*uniform dequantisation* (Uria, Murray & Larochelle 2013; Theis, van den Oord & Bethge 2016): a level x becomes
:math:`y = 2 (x + u) / L - 1` with :math:`u \sim U[0, 1)^{64}` drawn afresh at every draw of training data, so that
a continuous density of y gives, through the Jacobian :math:`(2/L)^{64}`, a lower bound on the log-probability of
the discrete image (:func:`controlsamp.generative.likelihood.dequantise` and ``bits_per_dim``). For display,
:func:`to_model_space` puts a level at the centre of its cell (u = 1/2) and :func:`from_model_space` maps any
point of the cell back to its level.

**Scale**: :func:`load_data` reports the data's scale, among it the largest pairwise distance of the training
points, which sets the VE reference's :math:`\sigma_{\max}` (Song & Ermon 2020, "Improved techniques for training
score-based generative models", technique 1).
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Tuple

import numpy as np
import torch

from .._validate import check_dim, check_seed

Tensor = torch.Tensor

__all__ = ["DIGITS_LEVELS", "TOY_DATASETS", "digits", "to_model_space", "from_model_space", "DequantisedData",
           "load_data", "max_pairwise_distance", "image_grid"]

DIGITS_LEVELS = 17
"""Intensity levels of scikit-learn's 8x8 digits (0..16)."""

# The 2-d sets of controlsamp.targets.datasets by the names the generative tools use (the registry's own
# name of the eight Gaussians is "8gaussians"; both are accepted).
TOY_DATASETS = {"moons": "moons", "circles": "circles", "eight_gaussians": "8gaussians",
                "8gaussians": "8gaussians", "checkerboard": "checkerboard", "spirals": "spirals"}
SPLITS = ("train", "test", "all")


def _sub_seed(seed: int, stream: int) -> int:
    """An independent seed for the ``stream``-th random stream of ``seed`` (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _split(n: int, test_fraction: float, seed: int) -> Tuple[Tensor, Tensor]:
    """Sorted, disjoint (train, test) row indices of a seeded random split of n rows."""
    if not (isinstance(test_fraction, (int, float)) and 0.0 < float(test_fraction) < 1.0):
        raise ValueError(f"test_fraction must be a number in (0, 1); got {test_fraction!r}")
    n_test = int(round(float(test_fraction) * n))
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction = {test_fraction} of {n} rows leaves an empty train or test set")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_sub_seed(seed, 0)))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("controlsamp.generative.data.digits needs scikit-learn, which ships the 8x8 digits "
                          "(no download): pip install scikit-learn") from exc
    bunch = load_digits()
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def digits(split: str = "train", test_fraction: float = 0.2, seed: int = 0, return_labels: bool = False):
    """scikit-learn's 8x8 digits as integer levels 0..16 (float64, shape (N, 64); rows in the data set's order):
    ``split`` ``"train"`` or ``"test"`` of a seeded random split (``test_fraction`` of the 1797 images in the test
    set: 359 of them by default; the two are disjoint and together all), or ``"all"``. ``return_labels``: also the
    class of each image, (N,) int64 (a pair (images, labels))."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    xa, ya = _digits_arrays()
    x, y = torch.from_numpy(xa.copy()), torch.from_numpy(ya.copy())
    if split != "all":
        train, test = _split(x.shape[0], test_fraction, check_seed(seed))
        rows = train if split == "train" else test
        x, y = x[rows], y[rows]
    return (x, y) if return_labels else x


def _check_levels(levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or int(levels) < 2:
        raise ValueError(f"levels must be an integer >= 2 (the number of intensity levels); got {levels!r}")
    return int(levels)


def _check_level_values(x_int, levels: int, name: str = "x_int") -> Tensor:
    x = torch.as_tensor(x_int).detach().to(torch.float64)
    if x.numel() and not bool(((x == x.round()) & (x >= 0) & (x <= levels - 1)).all()):
        bad = x[~((x == x.round()) & (x >= 0) & (x <= levels - 1))][0].item()
        raise ValueError(f"{name} must hold integer levels 0..{levels - 1}; got the value {bad}")
    return x


def to_model_space(x_int, levels: int) -> Tensor:
    """Integer levels 0..levels-1 to the centres of their cells in [-1, 1]: y = 2 (x + 1/2) / levels - 1
    (float64; what a dequantised level is on average; for display and for a model's starting points)."""
    levels = _check_levels(levels)
    return 2.0 * (_check_level_values(x_int, levels) + 0.5) / levels - 1.0


def from_model_space(y, levels: int) -> Tensor:
    """Points of [-1, 1] back to integer levels (float64): the cell of y = 2 (x + u) / levels - 1, u in [0, 1),
    is x = floor((y + 1) levels / 2), clamped to 0..levels-1 (a model's samples may leave [-1, 1]). The inverse of
    :func:`to_model_space` and of uniform dequantisation."""
    levels = _check_levels(levels)
    y = torch.as_tensor(y).detach().to(torch.float64)
    return torch.floor((y + 1.0) * (levels / 2.0)).clamp(0, levels - 1)


class DequantisedData:
    r"""Training data of integer levels, dequantised afresh at every draw: ``data(n, generator)`` draws n rows
    uniformly with replacement and returns them as :math:`2 (x + u) / L - 1`, u uniform
    (:func:`controlsamp.generative.likelihood.dequantise`), float64 (n, dim) in [-1, 1]. Pass it to
    :meth:`DiffusionModel.fit <controlsamp.generative.DiffusionModel.fit>` as the data. ``x_int``: the levels
    (N, dim); ``levels``: L; :meth:`centres` is the data at the centres of their cells."""

    def __init__(self, x_int, levels: int):
        self.levels = _check_levels(levels)
        self.x_int = _check_level_values(x_int, self.levels)
        if self.x_int.ndim != 2 or self.x_int.shape[0] < 1:
            raise ValueError(f"x_int must have shape (N, d) with N >= 1; got {tuple(self.x_int.shape)}")
        self.dim = int(self.x_int.shape[1])

    def __len__(self) -> int:
        return int(self.x_int.shape[0])

    def __call__(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        from .likelihood import dequantise
        rows = self.x_int[torch.randint(len(self), (check_dim(n, "n"),), generator=generator)]
        return dequantise(rows, self.levels, generator=generator)

    def centres(self) -> Tensor:
        """The data at the centres of their cells, (N, dim) float64 (:func:`to_model_space`)."""
        return to_model_space(self.x_int, self.levels)

    def __repr__(self) -> str:
        return f"DequantisedData({len(self)} rows of {self.dim} values, levels={self.levels})"


def max_pairwise_distance(x, max_points: int = 5000, seed: int = 0) -> float:
    r"""The largest Euclidean distance between two rows of x (n, d): Song & Ermon's (2020) choice of the largest
    noise scale :math:`\sigma_{\max}` (technique 1). Exact for up to ``max_points`` rows; for more, the largest
    over a seeded random subset of ``max_points`` rows (the cost is quadratic), a slight underestimate."""
    x = torch.as_tensor(x).detach().to(torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (n, d) with n >= 2; got {tuple(x.shape)}")
    if x.shape[0] > max_points:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points]]
    best = 0.0
    for i in range(0, x.shape[0], 1000):  # row blocks keep the distance matrix small
        best = max(best, float(torch.cdist(x[i:i + 1000], x).max()))
    return best


def _load_npy(path: str) -> Tensor:
    if not os.path.isfile(path):
        raise ValueError(f"data: no such file {path!r} (give a .npy file of shape (N, d) or one of "
                         f"{', '.join(sorted(set(TOY_DATASETS) - {'8gaussians'}))}, digits)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"data: {path!r} is not a readable .npy array file ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"data: {path!r} must hold a numeric array of shape (N, d); got {kind}")
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"data: {path!r} must hold an array of shape (N, d) with N >= 2 points (one per row); got "
                         f"shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    finite = torch.isfinite(x).all(1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0])
        raise ValueError(f"data: {path!r} holds a non-finite value (NaN or inf) in row {row}: {x[row].tolist()}"
                         + (f" ({int((~finite).sum())} rows in all)" if int((~finite).sum()) > 1 else ""))
    return x


def load_data(spec: str, n_train: int = 10_000, n_test: int = 2_000, seed: int = 0,
              test_fraction: float = 0.2) -> Tuple[object, Tensor, dict]:
    r"""A data set as ``(train, test, info)``, all seeded by ``seed``.

    ``spec``:

    * a 2-d toy set of :mod:`controlsamp.targets.datasets` (``moons``, ``circles``, ``eight_gaussians``,
      ``checkerboard``, ``spirals``): ``n_train`` and ``n_test`` fresh samples from separate seeded streams,
      float64 tensors;
    * ``"digits"``: the fixed split of :func:`digits` (``test_fraction``; ``n_train`` / ``n_test`` do not apply).
      ``train`` is a :class:`DequantisedData` (each draw dequantised afresh: pass it to ``fit``), ``test`` the test
      images dequantised once (a seeded draw), (N, 64) in [-1, 1], ready for a likelihood;
    * the path of a ``.npy`` file of shape (N, d): a seeded random split, ``test_fraction`` of the rows held out
      (``n_train`` / ``n_test`` do not apply); a missing file, another shape or a NaN / inf (its row named) is a
      ValueError.

    ``info``: ``name``, ``dim``, ``n_train``, ``n_test``, ``levels`` (17 for digits, else None), ``log_scale`` (the
    log-Jacobian of the map from the levels' unit cells to model space, :math:`D\log(2 / L)` for digits
    (:func:`~controlsamp.generative.likelihood.dequantisation_log_scale`), 0 otherwise: the ``log_scale`` of
    :func:`~controlsamp.generative.likelihood.bits_per_dim`), ``scale`` (root-mean-square standard deviation of the
    training data's coordinates, in model space) and ``max_distance`` (the largest pairwise distance of the
    training points in model space, :func:`max_pairwise_distance`: the VE reference's :math:`\sigma_{\max}`)."""
    seed = check_seed(seed)
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"data must be a name or the path of a .npy file; got {type(spec).__name__}")
    spec = os.fspath(spec)
    levels, log_scale = None, 0.0
    if spec in TOY_DATASETS:
        from ..targets.datasets import sample_dataset
        n_train, n_test = check_dim(n_train, "n_train"), check_dim(n_test, "n_test")
        train, test = (sample_dataset(TOY_DATASETS[spec], n, torch.Generator().manual_seed(_sub_seed(seed, k)))
                       .to(torch.float64) for k, n in ((1, n_train), (2, n_test)))
        points = train
    elif spec == "digits":
        from .likelihood import dequantisation_log_scale, dequantise
        levels, log_scale = DIGITS_LEVELS, dequantisation_log_scale(64, DIGITS_LEVELS)
        train = DequantisedData(digits("train", test_fraction, seed), levels)
        test = dequantise(digits("test", test_fraction, seed), levels,
                          generator=torch.Generator().manual_seed(_sub_seed(seed, 3)))
        points = train.centres()
    elif spec.endswith(".npy") or os.path.sep in spec or os.path.exists(spec):
        x = _load_npy(spec)
        i_train, i_test = _split(x.shape[0], test_fraction, seed)
        train, test = x[i_train], x[i_test]
        points = train
    else:
        raise ValueError(f"data must be one of {', '.join(n for n in TOY_DATASETS if n != '8gaussians')}, digits, "
                         f"or the path of a .npy file of shape (N, d); got {spec!r}")
    scale = float(points.var(0, unbiased=False).mean().sqrt()) if len(points) > 1 else 0.0
    info = dict(name=spec, dim=int(test.shape[1]), n_train=len(points), n_test=int(test.shape[0]), levels=levels,
                log_scale=log_scale, scale=scale, max_distance=max_pairwise_distance(points, seed=seed))
    return train, test, info


def image_grid(images, max_images: int = 64) -> np.ndarray:
    """The first ``max_images`` rows of ``images`` (n, side * side) as square images tiled in one array for display
    (``imshow``): a near-square grid, one NaN row / column between neighbours (mask them to leave the gaps blank)."""
    x = np.asarray(images, dtype=np.float64)
    side = int(round(x.shape[1] ** 0.5)) if x.ndim == 2 else 0
    if x.ndim != 2 or side * side != x.shape[1] or x.shape[0] < 1:
        raise ValueError(f"images must have shape (n, side * side) with n >= 1; got {x.shape}")
    k = min(x.shape[0], check_dim(max_images, "max_images"))
    cols = int(np.ceil(k ** 0.5))
    rows = int(np.ceil(k / cols))
    grid = np.full((rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)
    for i in range(k):
        r, c = divmod(i, cols)
        grid[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = x[i].reshape(side, side)
    return grid
