"""Reports and exports of a small sweep: the figures' numbers equal the store's, and the HTML
page loads in headless Chromium with every image and no console error."""

import base64
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

# EF at two delays, plain BPTT at one: three jobs, the first of which has the same compiled
# program as the sweeps in test_sweeps.py and test_ray.py (JAX's persistent cache shares it).
SPEC = """
name = "report"
seeds = 2
[base]
epochs = 3
batch = 16
train_trials = 32
val_trials = 8
patience = 1
threshold = 0.95
task.name = "delayed-xor"
model.hidden = 6
[zip]
"task.delay" = [4, 6, 6]
"forcing.kind" = ["ef", "ef", "none"]
"forcing.alpha" = [[0.2, 1.0], [0.2, 1.0], [0.0]]
"""
N_MEMBERS = 2 * 2 * 2 + 2
FIGURES = {"fraction_learned", "epochs_to_converge", "learning_curves", "alpha_heatmap", "curve_cos_F", "test_loss"}
LABEL = {"none": "BPTT", "ef": "EF-BPTT"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "errorforcing.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished 3-job sweep whose members also recorded an alignment curve `cos_F`
    (member m: the constant m / 10), then its report."""
    root = tmp_path_factory.mktemp("report")
    (root / "spec.toml").write_text(SPEC)
    out = root / "out"
    env = os.environ | {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "jax-compilation-cache"),
                        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    r = run_cli("sweep", str(root / "spec.toml"), "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(out / "runs.sqlite") as db:
        for run_id, member, curves in db.execute("SELECT run_id, member, curves FROM members").fetchall():
            curves = json.loads(curves)
            curves["cos_F"] = [member / 10] * len(curves["val_loss"])
            db.execute("UPDATE members SET curves = ? WHERE run_id = ? AND member = ?",
                       (json.dumps(curves), run_id, member))
    r = run_cli("report", str(out), "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def _wilson(k, n, z=1.959964):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _store_settings(out):
    """Straight from SQLite: per (method, delay, α): the members' converged flags, epochs, losses."""
    groups = defaultdict(list)
    with sqlite3.connect(out / "runs.sqlite") as db:
        for forcing, alpha, converged, epoch, loss, config, member in db.execute(
                "SELECT m.forcing, m.alpha, m.converged, m.converged_epoch, m.final_val_loss, r.config, m.member "
                "FROM members m JOIN runs r USING (run_id) WHERE r.status = 'done'"):
            delay = json.loads(config)["config"]["task"]["delay"]
            groups[(LABEL[forcing], delay, alpha)].append((converged, epoch, loss, member))
    return groups


def _best(groups, method, delay):
    """The report's grid search: most learned, then fewer median epochs, then lower loss."""
    def rank(item):
        members = item[1]
        epochs = [e for c, e, _, _ in members if c]
        return (-sum(c for c, *_ in members) / len(members), np.median(epochs) if epochs else math.inf,
                np.median([loss for _, _, loss, _ in members]))
    return min(((k, v) for k, v in groups.items() if k[:2] == (method, delay)), key=rank)


def _figure(report_dir, name):
    return json.loads((report_dir / "report.json").read_text())["figures"][name]["data"]


def test_report_writes_every_figure_as_png_and_svg(swept):
    out, summary = swept
    assert set(summary["figures"]) == FIGURES
    for name, files in summary["figures"].items():
        assert sorted(Path(f).suffix for f in files) == [".png", ".svg"]
        assert all(Path(f).stat().st_size > 5_000 for f in files)
    page = (out / "report" / "report.html").read_text()
    import errorforcing

    assert f"errorforcing {errorforcing.__version__}" in page
    assert '"task.delay" = [4, 6, 6]' in page  # the sweep spec, as written
    assert "http://" not in page and "https://" not in page  # nothing from the network


def test_figure_numbers_equal_the_store(swept):
    out, _ = swept
    groups = _store_settings(out)
    report = out / "report"
    (panel,) = _figure(report, "fraction_learned")
    assert panel["xlabel"] == "task.delay" and {s["label"] for s in panel["errorbars"]} == {"BPTT", "EF-BPTT"}
    for series in panel["errorbars"]:
        assert series["x"] == ([6.0] if series["label"] == "BPTT" else [4.0, 6.0])
        for x, y, low, high in zip(series["x"], series["y"], series["low"], series["high"]):
            best = max(sum(c for c, *_ in v) for k, v in groups.items() if k[:2] == (series["label"], x))
            n = len(groups[(series["label"], x, 0.0 if series["label"] == "BPTT" else 0.2)])
            assert y == pytest.approx(best / n)
            assert (low, high) == pytest.approx(_wilson(best, n))
    (heat,) = _figure(report, "alpha_heatmap")
    (image,) = heat["images"]
    assert heat["title"] == "delayed-xor: EF-BPTT" and image["yticklabels"] == ["0.2", "1"]
    for i, alpha in enumerate((0.2, 1.0)):
        for j, delay in enumerate((4, 6)):
            members = groups[("EF-BPTT", delay, alpha)]
            assert image["values"][i][j] == pytest.approx(sum(c for c, *_ in members) / len(members))
    (epochs,) = _figure(report, "epochs_to_converge")
    for series in epochs["errorbars"]:
        for x, y, low, high in zip(series["x"], series["y"], series["low"], series["high"]):
            (_, _, alpha), members = _best(groups, series["label"], x)
            converged = [e for c, e, _, _ in members if c]
            assert (y, low, high) == pytest.approx(tuple(np.percentile(converged, [50, 25, 75])))
    for panel in _figure(report, "curve_cos_F"):
        delay = int(panel["title"].rsplit("= ", 1)[1])
        for line in panel["lines"]:
            method = line["label"].split(" (")[0]
            (_, _, alpha), members = _best(groups, method, delay)
            assert line["label"] == f"{method} (α={alpha:g})"
            assert line["y"] == pytest.approx([np.median([m / 10 for *_, m in members])] * len(line["y"]))


def test_test_loss_figure_and_table_equal_the_store(swept):
    out, _ = swept
    groups = _store_settings(out)
    with sqlite3.connect(out / "runs.sqlite") as db:
        test_loss = {(forcing, alpha, json.loads(config)["config"]["task"]["delay"], member): loss
                     for forcing, alpha, member, loss, config in db.execute(
                         "SELECT m.forcing, m.alpha, m.member, m.test_loss, r.config FROM members m "
                         "JOIN runs r USING (run_id) WHERE r.status = 'done'")}
    assert all(v is not None and v > 0 for v in test_loss.values())  # nothing diverged in this sweep
    forcing_of = {v: k for k, v in LABEL.items()}
    (panel,) = _figure(out / "report", "test_loss")
    assert {s["label"] for s in panel["errorbars"]} == {"BPTT", "EF-BPTT"}
    for series in panel["errorbars"]:
        for x, y, low, high in zip(series["x"], series["y"], series["low"], series["high"]):
            (_, _, alpha), members = _best(groups, series["label"], x)
            losses = [test_loss[(forcing_of[series["label"]], alpha, x, m)] for *_, m in members]
            assert (y, low, high) == pytest.approx(tuple(np.percentile(losses, [50, 25, 75])))
    best = json.loads((out / "report" / "report.json").read_text())["best"]
    for b in best:
        (_, _, alpha), members = _best(groups, b["method"], b["x"])
        losses = [test_loss[(forcing_of[b["method"]], alpha, b["x"], m)] for *_, m in members]
        assert b["median_test_loss"] == pytest.approx(np.median(losses))
    assert 'data-key="median_test_loss"' in (out / "report" / "report.html").read_text()


# ----- the page in a real browser -----
def _devtools(chromium: str, url: str, profile: Path):
    """Load `url` in headless Chromium through the DevTools protocol: (images, console errors,
    screenshot PNG bytes, the page's tables as text)."""
    websocket = pytest.importorskip("websocket")
    proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--window-size=1280,1600", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        page = next(t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
                    if t["type"] == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], suppress_origin=True, timeout=60)
        events, ids = [], iter(range(1, 1 << 30))

        def call(method, **params):
            i = next(ids)
            ws.send(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == i:
                    assert "error" not in msg, msg
                    return msg["result"]
                events.append(msg)

        def evaluate(expression):
            return call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

        for domain in ("Runtime", "Log", "Page"):
            call(f"{domain}.enable")
        call("Page.navigate", url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            events.append(json.loads(ws.recv()))
        images = evaluate("Array.from(document.images).map(i => ({src: i.src, width: i.naturalWidth}))")
        tables = evaluate("Object.fromEntries(Array.from(document.querySelectorAll('table[id]')).map(t => "
                          "[t.id, Array.from(t.tBodies[0].rows).map(r => Object.fromEntries(Array.from(r.cells)"
                          ".map(c => [c.dataset.key, c.textContent])))]))")
        shot = base64.b64decode(call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        ws.close()
        errors = [e for e in events if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        return images, errors, shot, tables
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium; .ci/run does)")
    return path


def test_report_page_loads_in_headless_chromium(swept, chromium, tmp_path):
    out, _ = swept
    page = out / "report" / "report.html"
    images, errors, shot, tables = _devtools(chromium, page.resolve().as_uri(), tmp_path / "profile")
    assert errors == []
    # every figure of the page renders: the FIGURES set plus the Dynamics section's own images
    names = {i["src"].rsplit("/", 1)[-1].rsplit(".", 1)[0] for i in images}
    assert set(FIGURES) <= names and all(i["width"] > 0 for i in images), images
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    (tmp_path / "report.png").write_bytes(shot)
    # the tables the browser shows are the store's numbers
    groups = _store_settings(out)
    assert len(tables["settings"]) == len(groups)
    for row in tables["settings"]:
        members = groups[(row["method"], int(row["x"]), float(row["alpha"]))]
        assert int(row["n"]) == len(members) and int(row["learned"]) == sum(c for c, *_ in members)
    # the checker itself sees a broken page
    broken = tmp_path / "broken.html"
    broken.write_text('<!doctype html><img src="missing.png"><script>console.error("boom")</script>')
    images, errors, _, _ = _devtools(chromium, broken.as_uri(), tmp_path / "profile2")
    assert images[0]["width"] == 0 and errors


# ----- exports -----
def test_export_csv_has_a_row_per_member_with_its_config(swept, tmp_path):
    out, _ = swept
    r = run_cli("export", str(out), "--csv", "--out", str(tmp_path / "m.csv"))
    assert r.returncode == 0, r.stderr
    import csv

    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    with sqlite3.connect(out / "runs.sqlite") as db:
        assert len(rows) == db.execute("SELECT count(*) FROM members").fetchone()[0] == N_MEMBERS
    assert {r["config.task.delay"] for r in rows} == {"4", "6"} and {r["sweep"] for r in rows} == {"report"}
    assert all(json.loads(r["curves"])["val_loss"] for r in rows)


def test_export_parquet_or_a_clear_error(swept, tmp_path):
    out, _ = swept
    target = tmp_path / "m.parquet"
    r = run_cli("export", str(out), "--parquet", "--out", str(target))
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert r.returncode == 2 and "pyarrow" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not target.exists()
        return
    assert r.returncode == 0, r.stderr
    assert pq.read_table(target).num_rows == N_MEMBERS


@pytest.mark.parametrize("args", [["report", "{tmp}/nothing"], ["export", "{tmp}/nothing", "--csv"],
                                  ["export", "{out}"], ["status", "{tmp}/nothing"]])
def test_report_export_status_bad_input_exit_2(swept, tmp_path, capsys, args):
    from errorforcing.cli import main

    out, _ = swept
    capsys.readouterr()
    assert main([a.format(tmp=tmp_path, out=out) for a in args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
