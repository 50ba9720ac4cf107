r"""Data on the sphere: longitude / latitude tables read into points of S^2, and the four earth-science event
sets of De Bortoli et al. 2022 ("Riemannian score-based generative modelling", after Mathieu & Nickel 2020):
volcanic eruptions, earthquakes, floods and fires (NOAA / NASA catalogues; 827, 6120, 4875 and 12809 events).

The package does not ship these files. :func:`load_earth` reads them from a folder (``root``, else the environment
variable ``CONTROLSAMP_EARTH_DATA``, else ``../shared/data/earth``) and says which file it looked for when one is
missing. Each file is a CSV table with a latitude and a longitude column in degrees (the column names contain
``lat`` and ``lon``, in any case and order, or no header and latitude first; lines starting with ``#`` are
comments), as distributed with the authors' code.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .._validate import check_seed
from .sphere import Sphere

Tensor = torch.Tensor

#: the four data sets and their file names
EARTH_FILES: Dict[str, str] = {"volcano": "volerup.csv", "earthquake": "quakes_all.csv", "flood": "flood.csv",
                               "fire": "fire.csv"}
#: the default folder searched for the files (relative to the working directory)
EARTH_DEFAULT_ROOT = os.path.join("..", "shared", "data", "earth")


def read_lonlat_csv(path, lat_column: Optional[str] = None, lon_column: Optional[str] = None) -> Tensor:
    """The rows of a CSV table of latitudes and longitudes (degrees) as unit vectors (n, 3) of S^2 (float64).

    The columns are found by name (the first containing ``lat`` / ``lon``, case-insensitive) unless given; a table
    whose first row is numeric has no header and is read as latitude, longitude (in that order). A
    missing file, a table without such columns, an unreadable number or a latitude outside [-90, 90] is an error
    naming the file and the line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(line for line in fh if line.strip() and not line.lstrip().startswith("#"))]
    if not rows:
        raise ValueError(f"{path!r} holds no table")
    def numeric(row):
        try:
            [float(v) for v in row]
            return True
        except ValueError:
            return False

    if numeric(rows[0]):  # no header: latitude, longitude by position (the authors' fire.csv)
        if lat_column is not None or lon_column is not None:
            raise ValueError(f"{path!r} has no header, so lat_column / lon_column cannot be used")
        rows = [["lat", "lon"]] + rows
    header = [h.strip().lower() for h in rows[0]]

    def find(given, key):
        if given is not None:
            if given.lower() not in header:
                raise ValueError(f"{path!r} has no column {given!r}; columns: {rows[0]}")
            return header.index(given.lower())
        hits = [i for i, h in enumerate(header) if key in h]
        if not hits:
            raise ValueError(f"{path!r} has no column whose name contains {key!r}; columns: {rows[0]} (give "
                             f"{key}_column=...)")
        return hits[0]

    i_lat, i_lon = find(lat_column, "lat"), find(lon_column, "lon")
    lat, lon = [], []
    for k, r in enumerate(rows[1:], start=2):
        try:
            lat.append(float(r[i_lat]))
            lon.append(float(r[i_lon]))
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{path!r}, data row {k - 1}: cannot read a latitude and longitude from {r}") from exc
    lat_a, lon_a = np.asarray(lat), np.asarray(lon)
    if not (np.isfinite(lat_a).all() and np.isfinite(lon_a).all()):
        raise ValueError(f"{path!r} holds a NaN or inf coordinate (data row {int(np.argmax(~np.isfinite(lat_a + lon_a))) + 1})")
    bad = np.abs(lat_a) > 90
    if bad.any():
        raise ValueError(f"{path!r}, data row {int(np.argmax(bad)) + 1}: latitude {lat_a[bad][0]} outside [-90, 90]")
    return Sphere(2).from_lonlat(lon_a, lat_a)


def split(x: Tensor, seed: int = 0, fractions: Tuple[float, float, float] = (0.8, 0.1, 0.1)
          ) -> Tuple[Tensor, Tensor, Tensor]:
    """A seeded random split of the rows into (train, validation, test) with the given fractions (RSGM's
    80 / 10 / 10); the sizes are the floors of the fractions times n, the remainder going to the training set."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1; got {fractions}")
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(check_seed(seed)))
    n_val, n_test = int(fractions[1] * n), int(fractions[2] * n)
    n_train = n - n_val - n_test
    return x[perm[:n_train]], x[perm[n_train:n_train + n_val]], x[perm[n_train + n_val:]]


def earth_path(name: str, root=None) -> str:
    """The file of an earth data set (``EARTH_FILES``) under ``root`` (module docstring for the default)."""
    if name not in EARTH_FILES:
        raise ValueError(f"name must be one of {sorted(EARTH_FILES)}; got {name!r}")
    root = os.fspath(root) if root is not None else os.environ.get("CONTROLSAMP_EARTH_DATA", EARTH_DEFAULT_ROOT)
    return os.path.join(root, EARTH_FILES[name])


def load_earth(name: str, root=None, seed: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """(train, validation, test) points of S^2 (float64) of an earth data set, split 80 / 10 / 10 by ``seed``.
    A missing file is a FileNotFoundError naming the path looked for and how to point at another folder."""
    path = earth_path(name, root)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the {name} data set is not available: no file {path!r}. Put the CSV there, pass "
                                "root=FOLDER or set CONTROLSAMP_EARTH_DATA=FOLDER")
    return split(read_lonlat_csv(path), seed)
