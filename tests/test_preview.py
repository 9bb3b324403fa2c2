"""`cutout-etl preview` and `inspect --html`: the pictures, their stretch, and the shared report."""

from __future__ import annotations

import base64
import io
import json
import re
import sys

import numpy as np
import pytest

from cutout_etl.viz import preview as preview_lib
from cutout_etl.viz.preview import make_previews

from .conftest import DEMO_ROWS, invoke, make_table, write_table

pytest.importorskip("matplotlib")
from PIL import Image  # a dependency of matplotlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["GALAXY", "QSO", "STAR"]


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as image:
        return image.size


@pytest.fixture(scope="module")
def dataset(demo_files, tmp_path_factory):
    path = tmp_path_factory.mktemp("preview") / "dataset.h5"
    assert invoke("build", *demo_files, "-o", path, "--quiet").exit_code == 0
    return path


@pytest.fixture(scope="module")
def drawn(dataset, tmp_path_factory):
    """One preview of the demo dataset through the CLI, with --hist."""
    out = tmp_path_factory.mktemp("drawn")
    result = invoke("preview", dataset, "-o", out / "preview.png", "--hist", out / "hist.png", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), out / "preview.png", out / "hist.png"


def test_preview_help_has_an_example():
    result = invoke("preview", "--help")
    assert result.exit_code == 0
    assert "Example: cutout-etl preview" in result.stdout


def test_grid_png_of_a_dataset(drawn):
    summary, grid, _ = drawn
    data = grid.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert 20_000 < len(data) < 1_000_000
    width, height = size(data)
    assert 400 < width < 1200 and 18 * 72 < height < 2000  # 18 rows of 72-pixel cells
    assert summary["input"] == "dataset" and summary["split"] == "train"
    assert summary["shown_per_class"] == {c: 6 for c in CLASSES}
    assert [o["class"] for o in summary["objects"]] == [c for c in CLASSES for _ in range(6)]
    assert summary["composite"] == ["i", "r", "g"]
    assert summary["softening"]["source"] == "stored statistics of the train split"
    assert summary["output_bytes"] == len(data)


def test_each_class_appears_in_its_rows(dataset):
    """Every grid row holds a drawn cutout (not blank), and rows are grouped by class."""
    result = make_previews([dataset], per_class=4, seed=3)
    image = pixels(result.grid_png)
    assert image.shape[:2] == (result.layout.height, result.layout.width)
    classes = [o["class"] for o in result.summary["objects"]]
    assert classes == [c for c in CLASSES for _ in range(4)]
    for row in result.layout.cells:
        assert len(row) == 5  # u, g, r, i and the colour composite
        for x0, y0, x1, y1 in row:
            cell = image[y0:y1, x0:x1]
            assert cell.std() > 3  # noise and a source, not a flat background
    assert result.layout.columns == ["u", "g", "r", "i", "irg colour"]


def test_hist_png(drawn):
    summary, _, hist = drawn
    data = hist.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and 20_000 < len(data) < 1_000_000
    width, height = size(data)
    assert width > 1000 and height > 400
    train = summary["rows_per_class"]
    assert summary["histogram_objects_per_class"] == train == {c: int(DEMO_ROWS * 0.7) for c in CLASSES}
    assert summary["hist_bytes"] == len(data)


def test_brightness_differences_survive_the_stretch(tmp_path):
    """Two objects with the same shape and sky, one 10x brighter: their pixels differ in every column.

    A per-image stretch would draw them alike and their skies differently; one stretch for all
    draws the identical sky pixels identically and the brighter source brighter.
    """
    table = make_table(2, b"STAR", 0, seed=5)
    yy, xx = np.mgrid[:36, :36]
    profile = np.exp(-((yy - 17.5) ** 2 + (xx - 17.5) ** 2) / (2 * 2.0**2)).astype(np.float32)[..., None]
    sky = table["image"][0].copy()
    table["image"][0] = sky + 2e-11 * profile
    table["image"][1] = sky + 2e-10 * profile
    path = write_table(table, tmp_path / "stars.hdf5")
    result = make_previews([path], per_class=2, seed=0)
    image = pixels(result.grid_png)
    faint_row, bright_row = result.layout.cells  # drawn rows are sorted: row 0 then row 1
    assert [o["where"] for o in result.summary["objects"]] == ["stars.hdf5 #0", "stars.hdf5 #1"]
    for (fx0, fy0, fx1, fy1), (bx0, by0, bx1, by1) in zip(faint_row, bright_row):
        faint = image[fy0:fy1, fx0:fx1].astype(int)
        bright = image[by0:by1, bx0:bx1].astype(int)
        corner = slice(0, 12)  # 6 image pixels from the edge: sky only
        assert np.array_equal(faint[corner, corner], bright[corner, corner])
        centre = slice(30, 42)
        assert bright[centre, centre].mean() > faint[centre, centre].mean() + 30


def test_class_files_use_softening_from_the_drawn_rows(demo_files):
    result = make_previews(demo_files, per_class=2, seed=0)
    summary = result.summary
    assert summary["input"] == "class files" and summary["split"] is None
    assert summary["classes"] == CLASSES and summary["shown_per_class"] == {c: 2 for c in CLASSES}
    assert summary["softening"]["source"] == "computed from the 6 drawn cutouts (no stored statistics)"
    r = summary["softening"]["bands"]["r"]
    assert 3e-12 < r["scale"] < 1e-11  # 3 x the demo's r sky sigma (1.7e-12, +-20%)
    assert result.hist_png is None


def test_sampling_is_deterministic_in_the_seed(dataset):
    first = make_previews([dataset], per_class=3, seed=1)
    again = make_previews([dataset], per_class=3, seed=1)
    other = make_previews([dataset], per_class=3, seed=2)
    assert first.summary["objects"] == again.summary["objects"]
    assert first.grid_png == again.grid_png
    assert first.summary["objects"] != other.summary["objects"]


def test_reads_only_the_rows_it_draws(dataset, monkeypatch):
    read = []
    original = preview_lib.readers.RowReader.read

    def counting(self, rows):
        read.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(preview_lib.readers.RowReader, "read", counting)
    make_previews([dataset], per_class=5, seed=0)
    assert sum(read) == 15
    read.clear()
    make_previews([dataset], per_class=5, seed=0, hist=True, hist_per_class=20)
    assert sum(read) == 15 + 60


def test_histogram_pass_reports_progress(dataset):
    calls = []
    make_previews([dataset], per_class=1, hist=True, hist_per_class=50, progress=lambda *a: calls.append(a))
    hist = [c for c in calls if c[0] == "histogram"]
    assert hist and hist[-1] == ("histogram", 150, 150)
    assert [d for _, d, _ in hist] == sorted(d for _, d, _ in hist)


def test_progress_lines_when_not_a_terminal(dataset, tmp_path):
    result = invoke(
        "preview",
        dataset,
        "-o",
        tmp_path / "p.png",
        "--hist",
        tmp_path / "h.png",
        "--per-class",
        "2",
        "--hist-per-class",
        "10",
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:2] == ["preview: 6 rows", "histogram: 30 rows"]
    assert lines[2] == f"wrote {tmp_path / 'p.png'}: GALAXY 2, QSO 2, STAR 2 from dataset.h5, train split"


def test_merged_file_and_small_classes(demo_files, tmp_path):
    merged = tmp_path / "merged.h5"
    assert invoke("merge", *demo_files, "-o", merged, "--quiet").exit_code == 0
    result = make_previews([merged], per_class=2)
    assert result.summary["split"] == "data"
    small = [
        write_table(make_table(3, b"QSO", 0), tmp_path / "qso.hdf5"),
        write_table(make_table(9, b"star", 100), tmp_path / "star.hdf5"),
    ]
    result = make_previews(small, per_class=5)
    assert result.summary["shown_per_class"] == {"QSO": 3, "STAR": 5}
    assert len(result.layout.cells) == 8


def test_nan_pixels_are_drawn_in_their_own_colour(tmp_path):
    table = make_table(1, b"STAR", 0)
    table["image"][0][:3, :3, :] = np.nan
    result = make_previews([write_table(table, tmp_path / "s.hdf5")], per_class=1)
    x0, y0, *_ = result.layout.cells[0][2]  # the r band
    assert tuple(pixels(result.grid_png)[y0 + 1, x0 + 1]) == preview_lib.BAD_RGB


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["{ds}", "-o", "{ds}"], 2, "error: {ds}: is also an input; choose another output path\n"),
        (["{ds}", "-o", "{tmp}/no/p.png"], 1, "error: {tmp}/no/p.png: output directory {tmp}/no does not exist\n"),
        (
            ["{ds}", "--split", "holdout", "-o", "{tmp}/p.png"],
            1,
            "error: {ds}: no split 'holdout' (splits: train, val, test)\n",
        ),
        (
            ["{ds}", "{g}", "-o", "{tmp}/p.png"],
            2,
            "error: {ds}: is a cutout-etl dataset; preview takes one dataset, or class files, not both\n",
        ),
        (
            ["{g}", "--split", "val", "-o", "{tmp}/p.png"],
            2,
            "error: {g}: --split applies to a dataset; this is a class file\n",
        ),
        (["{tmp}/missing.h5", "-o", "{tmp}/p.png"], 1, "error: {tmp}/missing.h5: no such file\n"),
    ],
)
def test_failures_are_one_line(dataset, demo_files, tmp_path, args, code, message):
    names = {"ds": dataset, "g": demo_files[0], "tmp": tmp_path}
    result = invoke("preview", *(a.format(**names) for a in args))
    assert result.exit_code == code
    assert result.stderr == message.format(**names)
    assert not (tmp_path / "p.png").exists()


def test_without_matplotlib_a_one_line_error(dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = invoke("preview", dataset, "-o", tmp_path / "p.png")
    assert result.exit_code == 1
    assert result.stderr == "error: drawing needs matplotlib, which is not installed: pip install 'cutout-etl[plot]'\n"
    assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------- inspect --html


def _section(page: str, title: str) -> str:
    return page.split(f"<h2>{title}</h2>", 1)[1].split("<h2>", 1)[0]


def test_html_report_holds_class_counts_and_images(demo_files, tmp_path):
    target = tmp_path / "report.html"
    result = invoke("inspect", *demo_files, "--html", target)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.endswith(f"wrote {target}\n")
    page = target.read_text("utf-8")
    counts = _section(page, "Class counts")
    header = re.findall(r"<th>([^<]*)</th>", counts)
    assert header == ["file", *CLASSES, "rows"]
    rows = {
        cells[0]: cells[1:]
        for cells in (re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", counts))
        if cells
    }
    n = str(DEMO_ROWS)
    assert rows["image_table_galaxies.hdf5"] == [n, "0", "0", n]
    assert rows["image_table_qso.hdf5"] == ["0", n, "0", n]
    assert rows["total"] == [n, n, n, str(3 * DEMO_ROWS)]
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [alt for alt, _ in images] == ["Examples", "Distributions"]
    for _, data in images:
        png = base64.b64decode(data)
        assert png.startswith(PNG_SIGNATURE) and size(png)[0] > 400
    assert "0 errors, 0 warnings: files usable" in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere


def test_html_report_of_bad_files_still_written(demo_files, tmp_path):
    broken = tmp_path / "broken.hdf5"
    broken.write_text("nope")
    target = tmp_path / "report.html"
    result = invoke("inspect", demo_files[0], broken, "--html", target, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["html"]["path"] == str(target) and report["html"]["images"] == ["Examples", "Distributions"]
    page = target.read_text("utf-8")
    assert f"{broken}: not an HDF5 file" in page and "files NOT usable" in page


def test_html_report_without_matplotlib(demo_files, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    target = tmp_path / "report.html"
    result = invoke("inspect", *demo_files, "--html", target)
    assert result.exit_code == 0
    assert "note: No preview images: drawing needs matplotlib" in result.stderr
    page = target.read_text("utf-8")
    assert "data:image/png" not in page and "<h2>Class counts</h2>" in page
