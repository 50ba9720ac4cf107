"""Reading longitude / latitude tables onto S^2 and the earth data sets' split."""
import math

import pytest
import torch

from controlsamp.manifolds import data


def _write(path, text):
    path.write_text(text)
    return path


def test_read_lonlat_csv_finds_the_columns_by_name_and_maps_to_unit_vectors(tmp_path):
    f = _write(tmp_path / "a.csv", "# a comment\nLatitude,Longitude\n0,0\n90,10\n-30.5,-120\n")
    x = data.read_lonlat_csv(f)
    lat, lon = math.radians(-30.5), math.radians(-120)
    want = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon),
                                                      math.sin(lat)]], dtype=torch.float64)
    assert float((x - want).abs().max()) < 1e-12
    g = _write(tmp_path / "b.csv", "id,LON_deg,lat_deg\n1,-120,-30.5\n")  # other order and names
    assert float((data.read_lonlat_csv(g) - want[2:]).abs().max()) < 1e-12


def test_a_table_without_header_is_latitude_then_longitude(tmp_path):
    f = _write(tmp_path / "f.csv", "# source\r\n-30.5,-120\r\n90,10\r\n")
    x = data.read_lonlat_csv(f)
    lat, lon = math.radians(-30.5), math.radians(-120)
    assert float((x[0] - torch.tensor([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon),
                                       math.sin(lat)], dtype=torch.float64)).abs().max()) < 1e-12
    assert x.shape == (2, 3)
    with pytest.raises(ValueError, match="no header"):
        data.read_lonlat_csv(f, lat_column="lat")


def test_read_lonlat_csv_errors_name_the_file_and_row(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        data.read_lonlat_csv(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="'lon'"):
        data.read_lonlat_csv(_write(tmp_path / "c.csv", "lat,x\n1,2\n"))
    with pytest.raises(ValueError, match="row 2"):
        data.read_lonlat_csv(_write(tmp_path / "d.csv", "lat,lon\n1,2\nabc,3\n"))
    with pytest.raises(ValueError, match="row 1: latitude 91"):
        data.read_lonlat_csv(_write(tmp_path / "e.csv", "lat,lon\n91,2\n"))


def test_split_is_seeded_disjoint_and_80_10_10():
    x = torch.arange(1000, dtype=torch.float64).reshape(-1, 1)
    a, b, c = data.split(x, seed=3)
    assert (len(a), len(b), len(c)) == (800, 100, 100)
    assert sorted(torch.cat([a, b, c]).reshape(-1).tolist()) == list(range(1000))
    assert torch.equal(data.split(x, seed=3)[2], c) and not torch.equal(data.split(x, seed=4)[2], c)
    with pytest.raises(ValueError, match="fractions"):
        data.split(x, fractions=(0.5, 0.2, 0.2))


def test_load_earth_reads_the_named_file_or_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("CONTROLSAMP_EARTH_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="volerup.csv.*CONTROLSAMP_EARTH_DATA"):
        data.load_earth("volcano", root=tmp_path)
    with pytest.raises(ValueError, match="name must be one of"):
        data.load_earth("tsunami", root=tmp_path)
    rows = "\n".join(f"{(7 * i) % 180 - 89.5},{(13 * i) % 360 - 179.5}" for i in range(50))
    _write(tmp_path / "fire.csv", "latitude,longitude\n" + rows + "\n")
    monkeypatch.setenv("CONTROLSAMP_EARTH_DATA", str(tmp_path))
    tr, va, te = data.load_earth("fire", seed=1)
    assert (len(tr), len(va), len(te)) == (40, 5, 5)
    assert float((torch.cat([tr, va, te]).norm(dim=1) - 1).abs().max()) < 1e-12
