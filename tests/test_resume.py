"""Exact resume: a run killed with SIGKILL and resumed ends with the same weights, optimiser
state and log as an uninterrupted run of the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from invkit.training import latest_checkpoint, list_checkpoints, load_checkpoint

TESTS = Path(__file__).resolve().parent

# The training job, run in a subprocess so that it can be killed. Every kind of state is
# exercised: Ranger (Lookahead k=6 is not a divisor of the checkpoint interval), an lr drop,
# the blend warm-up, random flips, and several passes over the 8 real images.
SCRIPT = r"""
import os, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_training import PixelDistance, g_images, tiny_recipe
from invkit.losses import FeatureStyleLoss
from invkit.recipe import Preprocess, Schedule
from invkit.testing import tiny_stylegan2
from invkit.training import train

G = tiny_stylegan2(resolution=16, w_dim=16, max_channels=16, seed=3)
recipe = tiny_recipe(
    schedule=Schedule(batch_real=2, batch_synthetic=2, epochs=4, iters_per_epoch=8, lr=1e-3, lr_drop_epochs=1),
    preprocess=Preprocess(hflip=True), blend_warmup_steps=12, checkpoint_every=4, log_every=3,
    sample_every=100, keep_last=2, seed=7,
)
loss = FeatureStyleLoss(PixelDistance(), recipe.loss, lpips_scales=2)
delay = float(os.environ.get("STEP_DELAY", "0"))

def slow_loss(*args):
    time.sleep(delay)  # gives the test time to kill the run between checkpoints
    return loss(*args)

result = train(recipe, g_images(G, 8, 1), G, sys.argv[1], loss=slow_loss, progress=False, device="cpu")
print("final step", result.step)
"""


def _run(script: Path, out: Path, delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "STEP_DELAY": str(delay), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return subprocess.Popen([sys.executable, str(script), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out + err


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    victim = _run(script, killed, delay=0.25)
    reference = _run(script, straight)
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        found = list_checkpoints(killed)
        if found and found[-1][0] >= 8:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(latest_checkpoint(killed)).step
    assert 8 <= killed_at < 32

    log = _finish(_run(script, killed))
    assert f"resuming {killed} at step {killed_at}" in log and "final step 32" in log
    _finish(reference)

    a = load_checkpoint(latest_checkpoint(straight))
    b = load_checkpoint(latest_checkpoint(killed))
    assert a.step == b.step == 32
    assert a.model.keys() == b.model.keys()
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    assert a.optimizer["counter"] == b.optimizer["counter"] == 32
    for x, y in zip(a.optimizer["slow"], b.optimizer["slow"]):
        assert torch.equal(x, y)
    for i, state in a.optimizer["inner"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b.optimizer["inner"]["state"][i][key]), (i, key)
    assert a.scheduler == b.scheduler and a.data == b.data
    assert torch.equal(a.rng[0]["engine"], b.rng[0]["engine"])
    # the log of the resumed run equals the uninterrupted one, apart from timings
    def lines(run):
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "sec_per_step"} for row in rows]

    assert lines(killed) == lines(straight)
    # trained: the weights moved away from the initialisation
    first = load_checkpoint(list_checkpoints(straight)[0][1])
    assert any(not torch.equal(first.model[k], a.model[k]) for k in a.model)
