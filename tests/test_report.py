"""`shardgraph report`: the figures of an embedding run, the map coloured by a label file, and every
figure of both kinds of report rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shardgraph.cli import main
from shardgraph.config import load_config
from shardgraph.data.importer import import_edges
from shardgraph.data.nodes import import_graph
from shardgraph.errors import InputError
from shardgraph.report.html import write_report
from shardgraph.training.trainer import train
from tests.conftest import kg_files
from tests.test_sage import planted_graph, sage_config

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if shutil.which(n)), None)
# appended to a copy of the page: once loaded, each image's decoded size is written into the DOM
PROBE = """<script>window.addEventListener('load', () => {
  const seen = [];
  for (const img of document.images) {
    const decoded = img.complete && img.naturalWidth > 0;
    let inked = 0;  // pixels drawn (not blank, not white): a truncated PNG has a size but no pixels
    if (img.naturalWidth && img.naturalHeight) {
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const g = canvas.getContext('2d'); g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let k = 0; k < d.length; k += 4) if (d[k + 3] > 0 && Math.min(d[k], d[k + 1], d[k + 2]) < 240) inked++;
    }
    seen.push([img.alt, decoded, img.naturalWidth, img.naturalHeight, inked]);
  }
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(seen);
  document.body.appendChild(pre);
});</script>"""


@pytest.fixture(scope="module")
def nations_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nations")
    files = kg_files("nations")
    import_edges([files["train"]], root / "ds", valid=files["valid"], test=files["test"], partitions=2,
                 progress=False)
    config = load_config(None, [f"data.dataset={root / 'ds'}", "model.dimension=16", "training.epochs=2",
                                "training.workers=1", "training.eval_every=1", "training.batch_size=200"])
    return train(config, run_dir=root / "run", progress=False).path


def titles(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<h2>([^<]+)</h2><img src='data:image/png;base64,", page)]


def test_report_of_an_embedding_run_draws_every_figure(nations_run: Path, tmp_path: Path) -> None:
    page = write_report(nations_run, tmp_path / "r.html").read_text()
    drawn = titles(page)
    assert {"Training loss", "Validation metrics during training", "Throughput per bucket",
            "Embedding norms"} <= set(drawn)
    maps = [t for t in drawn if t.startswith("Entity embeddings, t-SNE")]
    assert maps == ["Entity embeddings, t-SNE, coloured by entity type (14 entities)"]  # Nations: 14 countries


def test_the_map_is_coloured_by_a_label_file(nations_run: Path, tmp_path: Path) -> None:
    names = sorted({line.split("\t")[0] for line in kg_files("nations")["train"].read_text().splitlines()})
    labels = tmp_path / "labels.tsv"
    # a header, 6 labelled countries, one id the run does not know (skipped)
    labels.write_text("id\tlabel\n" + "".join(f"{n}\t{'ab'[i % 2]}\n" for i, n in enumerate(names[:6]))
                      + "atlantis\ta\n")
    out = tmp_path / "r.html"
    assert main(["report", str(nations_run), "--labels", str(labels), "--out", str(out)]) == 0
    maps = [t for t in titles(out.read_text()) if t.startswith("Entity embeddings")]
    assert maps == ["Entity embeddings, t-SNE, coloured by label (labels.tsv) (6 entities)"]

    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("atlantis\ta\nlemuria\tb\n")
    with pytest.raises(InputError, match=r"unknown\.tsv.*none of the 2 ids of the label file"):
        write_report(nations_run, tmp_path / "r2.html", labels=unknown)
    assert not (tmp_path / "r2.html").exists()


def rendered_images(page: Path, tmp_path: Path) -> list[list]:
    """[alt, decoded, naturalWidth, naturalHeight, inked pixels] of every image of the page, as Chromium
    decoded and drew it."""
    assert CHROMIUM is not None
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=20000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"Chromium did not run the page's script (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium; "
                                              ".ci/run installs it)")
def test_every_figure_renders_in_a_browser(nations_run: Path, tmp_path: Path) -> None:
    from shardgraph.gnn.train import train_sage
    from shardgraph.report.sage import write_sage_report

    files = planted_graph(tmp_path / "planted")
    import_graph([files["edges"]], tmp_path / "planted_ds", nodes=[files["nodes"]], labels=files["labels"],
                 config=files["config"], progress=False)
    sage_run = train_sage(sage_config({**files, "dataset": tmp_path / "planted_ds"}, "sage.epochs=20"),
                          tmp_path / "sage")
    pages = [write_report(nations_run, tmp_path / "embedding.html"), write_sage_report(sage_run.path)]
    for page in pages:
        expected = titles(page.read_text())
        images = rendered_images(page, tmp_path)
        assert [alt for alt, *_ in images] == expected, page
        broken = [alt for alt, decoded, width, height, inked in images
                  if not (decoded and width > 100 and height > 100 and inked > 0.005 * width * height)]
        assert not broken, f"{page}: figures that did not render: {broken}"
    assert len(titles(pages[1].read_text())) >= 6


def test_the_browser_check_sees_a_broken_figure(tmp_path: Path) -> None:
    """The check above is not vacuous: a figure cut short (its size is known, its pixels are not) and one
    that does not decode at all are both reported."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shardgraph.report.html import _png

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 2, 1])
    good = _png(fig).split(",", 1)[1]
    cut = base64.b64encode(base64.b64decode(good)[:300]).decode("ascii")
    page = tmp_path / "broken.html"
    page.write_text("<html><body>" + "".join(f"<h2>{alt}</h2><img src='data:image/png;base64,{data}' alt='{alt}'>"
                                              for alt, data in (("good", good), ("cut", cut), ("bad", "AAAA")))
                    + "</body></html>")
    seen = {alt: (decoded, width, inked) for alt, decoded, width, _, inked in rendered_images(page, tmp_path)}
    assert seen["good"][0] and seen["good"][1] > 250 and seen["good"][2] > 0.01 * 250 * 150
    assert seen["cut"][2] == 0
    assert seen["bad"] == (False, 0, 0)
