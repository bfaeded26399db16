"""Open the HTML report in a real browser (headless Chromium) and check it.

Makes a report from `samples/` with `denoise --report --plot --dnsmos`, then
loads `report.html` in Chromium inside a checking page that, once the report
has loaded, counts the table's rows, checks that every plot decoded to an
image of its full size, that every before/after player can load its audio
(duration > 0), and that clicking a column heading sorts the rows. Prints
what it found, saves a screenshot, and exits 1 if anything is missing.

Needs Debian's `chromium` (apt install chromium): a browser is too heavy a
dependency for the test suite, so this lives here.

    python bench/render_report.py --screenshot docs/report-samples.png
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs in the checking page, next to report.html: file:// pages may read each
# other only with --allow-file-access-from-files, which the browser is given.
CHECK_PAGE = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="report" src="report.html" style="width:1400px;height:900px"></iframe>
<script>
function loaded(element, event) {
  return new Promise(function (done) {
    element.addEventListener(event, function () { done(true); });
    element.addEventListener('error', function () { done(false); });
  });
}
document.getElementById('report').addEventListener('load', async function () {
  var page = this.contentDocument;
  var rows = Array.from(page.querySelectorAll('#files tbody tr'));
  var images = Array.from(page.querySelectorAll('img'));
  var players = Array.from(page.querySelectorAll('audio'));
  var imageSizes = await Promise.all(images.map(async function (img) {
    if (!img.complete) { await loaded(img, 'load'); }
    return [img.getAttribute('src'), img.naturalWidth, img.naturalHeight];
  }));
  var durations = await Promise.all(players.map(async function (player) {
    var probe = new Audio(new URL(player.getAttribute('src'), page.baseURI).href);
    probe.preload = 'metadata';
    var ok = await loaded(probe, 'loadedmetadata');
    return [player.getAttribute('src'), ok ? probe.duration : 0];
  }));
  var headings = Array.from(page.querySelectorAll('#files th'));
  var column = headings.findIndex(function (th) { return th.textContent === 'duration s'; });
  headings[column].click();
  var sorted = Array.from(page.querySelectorAll('#files tbody tr')).map(function (row) {
    return parseFloat(row.cells[column].dataset.value) || 0;
  });
  document.getElementById('result').textContent = JSON.stringify({
    rows: rows.map(function (row) { return row.cells[0].textContent; }),
    images: imageSizes, audio: durations, sorted_by_duration: sorted,
  });
});
</script></body></html>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium found: apt install chromium")


def browse(*arguments: str) -> str:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--allow-file-access-from-files", "--autoplay-policy=no-user-gesture-required",
               "--virtual-time-budget=20000", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples")
    parser.add_argument("--method", default="spectral")
    parser.add_argument("--screenshot", type=Path, help="save the report's first screen here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        report = work / "report"
        run = subprocess.run(
            [sys.executable, "-m", "denoise.cli", str(args.samples), "-o", str(work / "out"),
             "--method", args.method, "--report", str(report), "--plot", "--dnsmos", "-q"],
            cwd=REPO_ROOT, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"denoise failed ({run.returncode}): {run.stderr.strip()}")
        expected = json.loads((report / "report.json").read_text())["files"]
        (report / "check.html").write_text(CHECK_PAGE)
        dom = browse("--dump-dom", (report / "check.html").as_uri())
        found = json.loads(re.search(r'<pre id="result">(.*?)</pre>', dom, re.S).group(1))
        if args.screenshot:
            browse(f"--screenshot={args.screenshot.resolve()}", "--window-size=1400,1100",
                   "--hide-scrollbars", (report / "report.html").as_uri())
    names = sorted(Path(record["input"]).name for record in expected)
    problems = []
    if sorted(found["rows"]) != names:
        problems.append(f"table rows {found['rows']} are not the files {names}")
    for src, width, height in found["images"]:
        print(f"image {src}: {width}x{height}")
        if (width, height) != (1400, 700):
            problems.append(f"{src} did not load at 1400x700")
    if len(found["images"]) != len(names):
        problems.append(f"{len(found['images'])} images for {len(names)} files")
    for src, duration in found["audio"]:
        print(f"audio {src}: {duration:.2f} s")
        if not duration > 0:
            problems.append(f"{src} does not play")
    if len(found["audio"]) != 2 * len(names):
        problems.append(f"{len(found['audio'])} players for {len(names)} files")
    if found["sorted_by_duration"] != sorted(found["sorted_by_duration"]):
        problems.append(f"clicking 'duration s' gave {found['sorted_by_duration']}")
    print(f"rows: {len(found['rows'])}, sorted by duration: {found['sorted_by_duration']}")
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")
    for problem in problems:
        print(f"problem: {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
