"""Click-to-mask latency in the GUI against the same work headless, in one run (under Xvfb).

    xvfb-run -a .venv/bin/python benchmarks/bench_gui.py --quick

Opens the launcher's napari window (``python -m napari_mlffm``'s layout, at
1366 x 768), then for each task times, with the shipped weights on the CPU
and the model's default sampling (16 proposals x 5 DDIM steps; a refine
draws the model's refine default, 8, as the Refine dock does by default):

* **Run**: a click on Propose masks' Run button until the mask layer holds
  the new proposal, against ``Segmenter.propose_iter`` on the same image
  driven to its end in this process (what the widget's worker runs);
* **Propose all**: a click on Cases' Propose all (with "redo", over the
  bundled samples) until the last case is in the list, against reading and
  proposing the same files in a loop;
* **Refine**: with one lesion click at the image's centre in the
  ``<image> prompts`` layer, a click on Refine with clicks' Refine button
  until the mask layer holds the refined proposal, against the Refine
  dock's worker body (:func:`napari_mlffm._qt.refine.refine_job`: the
  prompts, the current mask and the click disks) driven to its end.

Each figure is the median of the repeats, after one warm-up of each. "CPU s"
is the process's CPU time over the same interval (threads included): the
GUI's extra is what its event loop and redraws cost. The last line is
``GUI/headless: R.RRx`` for the Run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _wait_until(condition, timeout_s: float = 600.0) -> None:
    """Run Qt's event loop (blocking, with a 10 ms poll) until ``condition()`` holds."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop, timer = QEventLoop(), QTimer()
    deadline = time.monotonic() + timeout_s
    timer.timeout.connect(lambda: (condition() or time.monotonic() > deadline) and loop.quit())
    timer.start(10)
    if not condition():
        loop.exec()
    timer.stop()
    if not condition():
        raise TimeoutError("the GUI did not finish in time")


def _timed(action) -> tuple[float, float]:
    """(wall s, process CPU s) of ``action()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 repeats of Run, 1 of Propose all (default 5 and 2)")
    parser.add_argument("--window", default="1366x768", help="window size (default 1366x768)")
    args = parser.parse_args()
    repeats_run, repeats_all = (2, 1) if args.quick else (5, 2)
    window = tuple(int(v) for v in args.window.split("x"))

    config = tempfile.mkdtemp(prefix="bench_gui_config_")
    os.environ["NAPARI_MLFFM_CONFIG_DIR"] = config  # a fresh install's settings: the model's own sampling defaults
    os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="bench_gui_data_"))

    import numpy as np

    from napari_mlffm import __main__ as launcher
    from napari_mlffm import results
    from napari_mlffm._qt import common
    from napari_mlffm.sample_data import SAMPLES
    from napari_mlffm.settings import SETTINGS
    from model.diffusion.sampler import run_to_completion
    from training.data.imageio import read_image

    SETTINGS._settings = None
    SETTINGS.update(device="cpu")
    samples = sorted(SAMPLES.glob("*.jpg"))
    image = read_image(samples[0])
    segmenter = common.get_segmenter(None, "cpu")  # loaded once, shared by the GUI's workers (same cache)

    def headless_run() -> None:
        loop = segmenter.propose_iter(image, None, None, 0)
        for _ in loop:
            pass

    def headless_all() -> None:
        for path in samples:
            segmenter.propose(read_image(path), seed=0)

    viewer, docked = launcher.build_viewer([str(samples[0])], window)
    propose, cases, refine = docked["Propose masks"], docked["Cases"], docked["Refine with clicks"]
    propose.device.value = "cpu"
    cases.open_folder(SAMPLES)
    cases.redo.value = True
    launcher._settle(1.0)
    name = viewer.layers[0].name

    def gui_run() -> None:
        launcher._raise(viewer, "Propose masks")
        propose.run_button.native.click()
        _wait_until(lambda: propose.worker is None and results.case_layers(viewer, name)["mask"] is not None)

    def gui_all() -> None:
        launcher._raise(viewer, "Cases")
        cases.propose_button.native.click()
        _wait_until(lambda: cases.worker is None)

    def refine_prompts():
        from model.inputs.prompts import Prompts

        current = np.asarray(results.case_layers(viewer, name)["mask"].data) > 0
        return Prompts(((image.shape[0] / 2, image.shape[1] / 2),), ()).with_prior(current)

    def headless_refine() -> None:
        from napari_mlffm._qt.refine import refine_job

        proposal, _ = run_to_completion(refine_job(None, "cpu", image, refine_prompts(), None, None, None, 0))
        assert proposal is not None

    def gui_refine() -> None:
        launcher._raise(viewer, "Refine with clicks")
        state = results.case_layers(viewer, name)["mask"].metadata[results.KEY]
        state.pop("refine_seconds", None)
        refine.refine_button.native.click()
        _wait_until(lambda: refine.worker is None and "refine_seconds" in state)
        assert "refine_seconds" in state, refine.status.value

    gui_run()  # a mask for the Refine dock to start from
    refine.auto.value = False  # the click below is placed by the benchmark; the Refine button starts each run
    refine.image.value = viewer.layers[name]
    points = refine.prompts_layer()
    points.add([[image.shape[0] / 2, image.shape[1] / 2]])
    rows = []
    tasks = (
        ("Run", headless_run, gui_run, repeats_run),
        ("Propose all", headless_all, gui_all, repeats_all),
        ("Refine", headless_refine, gui_refine, repeats_run),
    )
    for label, headless, gui, repeats in tasks:
        headless(), gui()  # warm-up
        timings_h, timings_g = [], []
        for _ in range(repeats):  # interleaved, so a change of load on shared cores hits both
            timings_h.append(_timed(headless))
            timings_g.append(_timed(gui))
        rows.append((label, _median(timings_h), _median(timings_g), repeats))
    mask = results.case_layers(viewer, name)["mask"]
    assert mask is not None and np.asarray(mask.data).any()
    viewer.close()

    cores = os.cpu_count()
    print(f"click-to-mask, shipped weights on the CPU ({cores} cores, torch threads {__import__('torch').get_num_threads()}), "
          f"{segmenter.sampling_settings()[0]} proposals x {segmenter.sampling_settings()[1]} DDIM steps "
          f"({segmenter.refine_sampling_settings()[0]} per refine), window {window[0]}x{window[1]}")
    print(f"{'task':<12} {'repeats':>7} {'headless s':>11} {'GUI s':>8} {'GUI/headless':>13} {'CPU s headless':>15} {'CPU s GUI':>10}")
    for label, (h_wall, h_cpu), (g_wall, g_cpu), repeats in rows:
        print(f"{label:<12} {repeats:>7} {h_wall:>11.2f} {g_wall:>8.2f} {g_wall / h_wall:>12.2f}x {h_cpu:>15.2f} {g_cpu:>10.2f}")
    (_, (h_wall, h_cpu), (g_wall, g_cpu), _) = rows[0]
    print(f"GUI/headless CPU time for the Run: {g_cpu / h_cpu:.2f}x (less sensitive than wall time to other work on shared cores)")
    print(f"GUI/headless: {g_wall / h_wall:.2f}x")


if __name__ == "__main__":
    main()
