"""Report documents: HTML parses, images decode, missing data degrades, several runs, checks."""

from __future__ import annotations

import base64
import binascii
import io
import re
from html.parser import HTMLParser

import pytest
from PIL import Image
from test_report import make_run  # the synthetic run-directory builder

from probcons.report import write_report


class _ImageCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_report_html_parses_and_every_image_decodes(tmp_path):
    run = make_run(tmp_path / "stefan-synthetic")
    written = write_report([run])
    assert written["html"] == run / "report.html" and written["markdown"] == run / "report.md"
    for key in ("reliability", "pit", "error_time", "mass", "profiles", "regions", "shock"):
        assert written[key].is_file(), key
    parser = _ImageCollector()
    parser.feed(written["html"].read_text())
    parser.close()
    assert "table" in parser.tags and len(parser.sources) == 7
    for source in parser.sources:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        try:
            data = base64.b64decode(source[len(prefix) :], validate=True)
        except binascii.Error as error:
            pytest.fail(f"invalid base64: {error}")
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    markdown = written["markdown"].read_text()
    for name in ("unconstrained", "hardc", "probconserv", "report_figures/shock.png"):
        assert name in markdown
    links = re.findall(r"^!\[.*\]\((.+\.png)\)$", markdown, flags=re.MULTILINE)
    assert len(links) == 7 and all((run / link).is_file() for link in links)


def test_report_without_constant_data_degrades_with_notes(tmp_path):
    run = make_run(
        tmp_path / "bc-run",
        "diffusion",
        methods={"boon": 1.0},
        constant_data=False,
        attrs={"boundary_condition": "periodic"},
    )
    (run / "broken.nc").write_bytes(b"not a netCDF file")
    written = write_report([run], tmp_path / "out" / "bc.md")
    assert written["html"] == tmp_path / "out" / "bc.html"
    assert "shock" not in written
    markdown = written["markdown"].read_text()
    assert "CE not computed" in markdown and "skipped broken.nc" in markdown
    assert "sample mean and variance" in markdown and "Boundary" in markdown


def test_several_runs_side_by_side(tmp_path):
    first = make_run(tmp_path / "a" / "stefan", methods={"probconserv": 1.0})
    second = make_run(tmp_path / "b" / "stefan", "pme", methods={"hardc": 1.0}, n_functions=2)
    written = write_report([first, second])
    assert written["html"] == tmp_path.resolve() / "report.html"
    assert {"stefan_pit", "stefan-2_pit", "stefan_shock", "stefan-2_shock"} <= set(written)
    markdown = written["markdown"].read_text()
    assert "| stefan | probconserv |" in markdown and "| stefan-2 | hardc |" in markdown


def test_write_report_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="run_dirs"):
        write_report([])
    with pytest.raises(ValueError, match="run_dirs"):
        write_report([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="run_dirs"):
        write_report([tmp_path / "empty"])
    run = make_run(tmp_path / "run", methods={"probconserv": 1.0}, n_functions=2)
    with pytest.raises(ValueError, match="out"):
        write_report([run], tmp_path / "report.pdf")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.nc").write_bytes(b"junk")
    with pytest.raises(ValueError, match="no readable"):
        write_report([tmp_path / "bad"])
