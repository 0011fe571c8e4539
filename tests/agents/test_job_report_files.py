"""A finished job's report files: the JSON and a loss chart that any browser opens."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from agents.conductor.report import report_folder, write_report_files
from protocol.agents.conductor import JobReport, JobSpec
from runtime import loss_svg
from runtime.cli import sparkline

SVG = "{http://www.w3.org/2000/svg}"


def _report(curve: list[tuple[int, float]]) -> JobReport:
    return JobReport(
        job_id="job-1",
        state="done",
        spec=JobSpec(target="general_health"),
        domains=["general_health"],
        error=None,
        models=[],
        data_pass_rate=0.9,
        samples=40,
        stages=[],
        total_seconds=10.0,
        total_usd=0.0,
        warm_started_from=None,
        loss_curve=curve,
    )


def test_the_chart_draws_each_point_inside_its_axes_highest_loss_highest() -> None:
    curve = [(1, 3.2), (2, 2.5), (3, 2.9), (10, 1.1)]
    root = ElementTree.fromstring(loss_svg({"training loss": curve}, "job <1>"))
    assert root.tag == f"{SVG}svg" and root.find(f"{SVG}title").text == "job <1>"  # type: ignore[union-attr]
    (line,) = root.iter(f"{SVG}polyline")
    points = [tuple(map(float, p.split(","))) for p in line.attrib["points"].split()]
    width, height = float(root.attrib["width"]), float(root.attrib["height"])
    assert all(0 < x < width and 0 < y < height for x, y in points)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    assert xs == sorted(xs) and ys.index(min(ys)) == 0 and ys.index(max(ys)) == 3  # SVG's y grows downwards
    with pytest.raises(ValueError, match="no loss points"):
        loss_svg({"training loss": []}, "empty")


def test_report_files_are_written_with_the_chart_beside_them(tmp_path: Path) -> None:
    folder = report_folder(tmp_path, "job-1")
    written = write_report_files(_report([(1, 2.0), (2, 1.5)]), folder)
    assert written.report_path == str(folder / "report.json")
    assert json.loads((folder / "report.json").read_text())["loss_curve"] == [[1, 2.0], [2, 1.5]]
    assert (folder / "loss_curve.svg").read_text().startswith("<svg")
    untrained = report_folder(tmp_path, "job-2")
    write_report_files(_report([]).model_copy(update={"job_id": "job-2"}), untrained)
    assert sorted(p.name for p in untrained.iterdir()) == ["report.json"]


def test_the_terminal_chart_follows_the_curve() -> None:
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert sparkline([1.0, 1.0]) == "▁▁"
    assert len(sparkline([float(i) for i in range(400)], width=40)) == 40
    assert sparkline([]) == ""
