"""The report: every measure's section and figure from a small run of every measure, sections
skipped for measures a run lacks, escaping, the CLI; and the demo's report rendered in a real
headless Chromium (screenshot kept, no console errors, every image loaded, no network)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scored_runs import all_measures_run, demo_run  # tests/scored_runs.py

from intermodal.charts.figures import histograms
from intermodal.cli import main
from intermodal.measures.i2moe import leader_shares
from intermodal.report import write_report

pytestmark = pytest.mark.usefixtures("ray_session")

ARTIFACTS = Path(__file__).resolve().parents[1] / "runs" / "test-artifacts"
IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')
SECTION = re.compile(r"<h[23] id=\"[^\"]+\">([^<]+)</h[23]>")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# flags that keep the browser off the network and quiet
OFFLINE = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
# added by the test to a copy of the page (the report itself has no script): after load,
# list the images that did not decode and every blocked load or error, into the DOM
CHECK_SCRIPT = """<script nonce="check">
const problems = [];
document.addEventListener('securitypolicyviolation', e => problems.push('blocked ' + e.blockedURI));
window.addEventListener('error', e => problems.push('error ' + (e.message || e.target.src)), true);
window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const out = document.createElement('pre');
  out.id = 'report-check';
  out.textContent = JSON.stringify({images: images.length, broken, problems});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    return all_measures_run(tmp_path_factory)


def _sections(page: str) -> list[str]:
    return SECTION.findall(page)


def test_report_of_every_measure(run) -> None:
    page = Path(write_report(run)).read_text()
    assert _sections(page) == [
        "Run", "Global tables", "InterSHAP", "PID (CVX)", "LSMI", "PID (BATCH)"
    ]  # fmt: skip
    images = IMAGE.findall(page)
    alts = [alt for _, alt in images]
    assert alts == [
        "InterSHAP breakdown: modalities vs interactions",
        "Mean interaction matrix",
        "Mean decomposition of the explained probability",
        "Per-sample InterSHAP scores",
        "pid_cvx of (x1, x2)",
        "lsmi of (x1, x2) adjusted",
        "Per-sample LSMI of (x1, x2), raw",
        "PID BATCH of (x1, x2)",
    ]
    # the model's PID agreement with the labels' beside each PID's bars
    assert page.count("<th>α total</th>") == 2
    for data, _ in images:
        assert base64.b64decode(data).startswith(PNG_SIGNATURE)
    assert page.count("<img") == len(images)  # no image outside the embedded ones
    assert "http://" not in page and "https://" not in page


def test_sections_of_unmeasured_measures_are_left_out(run, tmp_path) -> None:
    copy = tmp_path / "pid_only"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["measures"] = ["pid_cvx"]
    manifest["dataset"] = "<b>bold</b> & co"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    for measure in ("intershap", "lsmi", "pid_batch"):
        (copy / "global" / f"{measure}.parquet").unlink()
    page = Path(write_report(str(copy))).read_text()
    assert _sections(page) == ["Run", "Global tables", "PID (CVX)"]
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page and "<b>bold" not in page


def test_cli_report_prints_its_path(run, capsys) -> None:
    assert main(["report", run]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run}/report/index.html"
    assert main(["report", str(Path(run) / "no_such_run")]) == 2
    assert "manifest.json: missing" in capsys.readouterr().err


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium on PATH, or Debian's package installed (root and apt-get needed)."""
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and apt-get is unavailable to install it")

    def apt_get(*arguments: str) -> subprocess.CompletedProcess:
        environment = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        return subprocess.run(
            ["apt-get", *arguments], capture_output=True, text=True, env=environment
        )

    install = apt_get("install", "-y", "--no-install-recommends", "chromium")
    if install.returncode != 0 and "unable to locate package" in install.stderr.lower():
        apt_get("update")  # a fresh machine has no package lists yet
        install = apt_get("install", "-y", "--no-install-recommends", "chromium")
    if install.returncode != 0 and "are you root" in install.stderr.lower():
        pytest.skip(f"chromium missing and apt-get cannot install it: {install.stderr[-200:]}")
    assert install.returncode == 0, install.stderr[-2000:]
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


def _chromium(binary: str, *arguments: str) -> subprocess.CompletedProcess:
    command = [binary, *OFFLINE, "--enable-logging=stderr", "--v=0", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_demo_report_renders_in_chromium(chromium, tmp_path, tmp_path_factory) -> None:
    out, _, _ = demo_run(tmp_path_factory)
    page = tmp_path / "index.html"  # a copy: the check's page goes beside it, not in the run
    page.write_text((out / "report" / "index.html").read_text())
    html = page.read_text()
    figures = 4 * 5  # 4 runs; each: 4 InterSHAP figures and the PID bars
    assert len(IMAGE.findall(html)) == figures

    checked = page.with_name("checked.html")
    policy = "style-src 'unsafe-inline'"
    checked.write_text(
        html.replace(policy, f"{policy}; script-src 'nonce-check'").replace(
            "</head>", f"{CHECK_SCRIPT}</head>"
        )
    )
    dump = _chromium(chromium, "--dump-dom", "--virtual-time-budget=10000", checked.as_uri())
    found = re.search(r'<pre id="report-check">([^<]*)</pre>', dump.stdout)
    assert found, f"the check did not run: {dump.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result == {"images": figures, "broken": [], "problems": []}
    console = [line for line in dump.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console

    screenshot = tmp_path / "report.png"
    shot = _chromium(
        chromium,
        "--hide-scrollbars",
        f"--screenshot={screenshot}",
        "--window-size=1100,9000",
        page.as_uri(),
    )
    assert shot.returncode == 0 and screenshot.stat().st_size > 100_000, shot.stderr[-2000:]
    console = [line for line in shot.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "report.png")


@pytest.mark.parametrize(
    "values",
    [
        np.array([]),
        np.full(10, np.nan),
        np.full(10, 0.25),
        1.0 + np.array([0.0, 2.2e-16, 4.4e-16, 0.0]),  # v(all) of a saturated model
        np.random.default_rng(0).normal(size=1000),
    ],
)
def test_histograms_draw_any_column(values) -> None:
    image = histograms({"column": values}, "one column")
    assert base64.b64decode(IMAGE.fullmatch(image).group(1)).startswith(PNG_SIGNATURE)


def test_leader_shares_count_each_experts_samples_by_hand() -> None:
    weights = {
        "uni_a": np.array([0.7, 0.1, 0.2, np.nan, 0.5]),
        "syn": np.array([0.2, 0.8, 0.7, 0.5, 0.3]),
        "red": np.array([0.1, 0.1, 0.1, 0.5, 0.2]),
    }
    # row 3 has a NaN weight and is left out: leaders of rows 0, 1, 2, 4 = uni_a, syn, syn, uni_a
    shares = leader_shares({"all samples": weights})
    assert shares == {"all samples": ([0.5, 0.5, 0.0], [None, None, None])}
