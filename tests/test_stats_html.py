"""``snapd stats --html``: a self-contained page whose chart renders in a real headless Chromium.

The screenshot check decodes Chromium's PNG with zlib alone and counts the pixels of the
chart's fill colours: project imports, third-party imports and the session fixture's bar.
Without chromium the test skips, except in CI (``CI=true``), where it fails: CI must install
it (``apt-get install -y --no-install-recommends chromium``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from test_stats import FIXTURE_SECONDS, generate

from snapd import report

# One xdist worker runs the whole module (tools/test.sh uses --dist loadgroup), so its
# module-scoped fixtures are built once, not once per worker.
pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("stats_html")]

WINDOW = (1200, 800)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page of one cold profile of the generated project's fixture test."""
    root = tmp_path_factory.mktemp("html")
    proj = Project(root / "proj", str(root / "runtime"))
    generate(proj)
    out = root / "startup.html"
    result = proj.snapd("stats", "--cold", "--html", str(out), "--", "tests/test_fixture.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote {out}" in result.stderr
    return out


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    # Nothing fetched when viewed: no links, sources, imports or urls of any kind.
    for needle in ("http:", "https:", "src=", "href=", "@import", "url(", "<link"):
        assert needle not in text, needle
    assert "<svg" in text and "heavy.mod_007" in text and "slow_resource" in text
    data = re.search(r'<script type="application/json" id="snapd-stats">(.*?)</script>', text)
    assert data is not None
    doc = json.loads(data.group(1))
    assert doc["schema"] == report.SCHEMA_VERSION and doc["mode"] == "cold"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(html: Path, png: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; CI must install it (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    with tempfile.TemporaryDirectory(prefix="snapd-chromium-") as profile_dir:
        result = subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={profile_dir}",
                f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--hide-scrollbars", "--force-device-scale-factor=1", html.as_uri(),
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert png.exists(), result.stderr[-2000:]


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, bytes per pixel and the unfiltered pixel rows of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytearray] = []
    prior = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        _unfilter(kind, line, prior, bpp)
        rows.append(line)
        prior = line
    return width, height, bpp, b"".join(rows)


def _unfilter(kind: int, line: bytearray, prior: bytearray, bpp: int) -> None:
    """Undo one row's PNG filter in place (filters 0-4 of the PNG spec)."""
    if kind == 0:
        return
    if kind == 2:
        line[:] = bytes((a + b) & 0xFF for a, b in zip(line, prior, strict=True))
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prior[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        else:
            corner = prior[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def colour_counts(png: bytes) -> Counter[tuple[int, int, int]]:
    """How many pixels of each exact RGB colour the image has."""
    width, height, bpp, pixels = decode_png(png)
    counts: Counter[tuple[int, int, int]] = Counter()
    for i in range(0, width * height * bpp, bpp):
        counts[(pixels[i], pixels[i + 1], pixels[i + 2])] += 1
    return counts


def _rgb(fill: str) -> tuple[int, int, int]:
    value = int(fill.lstrip("#"), 16)
    return (value >> 16, (value >> 8) & 0xFF, value & 0xFF)


def _near(counts: Counter[tuple[int, int, int]], fill: str, slack: int = 3) -> int:
    target = _rgb(fill)
    return sum(
        n
        for c, n in counts.items()
        if all(abs(a - b) <= slack for a, b in zip(c, target, strict=True))
    )


def test_chart_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    png = tmp_path / "startup.png"
    _screenshot(page, png)
    counts = colour_counts(png.read_bytes())
    assert sum(counts.values()) == WINDOW[0] * WINDOW[1]
    # Each legend swatch is 11 x 11 = 121 pixels: the counts below need the chart itself.
    data = re.search(r'id="snapd-stats">(.*?)</script>', page.read_text())
    assert data is not None
    doc: dict[str, Any] = json.loads(data.group(1))
    total = doc["profile"]["total_seconds"]
    chart_width = 1160 - 84
    # The fixture's bar: FIXTURE_SECONDS of the timeline, 20 px high.
    fixture_px = _near(counts, report.FIXTURE_FILL)
    assert fixture_px >= 0.6 * (FIXTURE_SECONDS / total) * chart_width * 20, fixture_px
    # Project imports: the conftest (about 0.6 s) and heavy.mod_007 below it, 15 px rows.
    project_px = _near(counts, report.KIND_FILLS["project"])
    assert project_px >= 0.6 * (0.3 / total) * chart_width * 15 * 2, project_px
    assert _near(counts, report.KIND_FILLS["third_party"]) > 1000  # pytest's own imports


def test_decoder_against_a_known_image(tmp_path: Path) -> None:
    """The decoder reads what zlib and the spec say, for every filter type."""
    width, height = 5, 5
    rows = [
        bytes(c for x in range(width) for c in (x * 40 + y, 255 - x * 30, y * 50))
        for y in range(height)
    ]
    raw = b"".join(bytes([0]) + row for row in rows)  # filter 0 everywhere
    chunk = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png = b"\x89PNG\r\n\x1a\n" + chunk + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    assert decode_png(png)[3] == b"".join(rows)
    for kind in (1, 2, 3, 4):
        filtered = _filter_all(rows, kind, 3)
        png = b"\x89PNG\r\n\x1a\n" + chunk + _chunk(b"IDAT", zlib.compress(filtered))
        assert decode_png(png + _chunk(b"IEND", b""))[3] == b"".join(rows), kind


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _filter_all(rows: list[bytes], kind: int, bpp: int) -> bytes:
    """Apply PNG filter ``kind`` to every row (the encoder's side, for the decoder's test)."""
    out = b""
    prior = bytes(len(rows[0]))
    for row in rows:
        filtered = bytearray(len(row))
        for i, value in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            up = prior[i]
            corner = prior[i - bpp] if i >= bpp else 0
            predictor = {1: left, 2: up, 3: (left + up) // 2, 4: _paeth(left, up, corner)}[kind]
            filtered[i] = (value - predictor) & 0xFF
        out += bytes([kind]) + bytes(filtered)
        prior = row
    return out
