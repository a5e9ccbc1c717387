"""Multi-process training: ``torchrun --nproc_per_node 2`` on the CPU with the gloo backend.

Each rank trains on its own shard of the real images with its own synthetic latents; DDP
averages the gradients, so the ranks must end with identical weights (and, after the final
synchronisation, identical BatchNorm statistics), and only rank 0 writes the run's files.
This file is also the worker script that torchrun launches.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent


def worker(out: str) -> None:
    """One torchrun process: train, then save this rank's final weights and data shard."""
    torch.set_num_threads(1)
    sys.path.insert(0, str(TESTS))
    from test_training import PixelDistance, g_images, tiny_recipe

    from invkit.io import tensorfile
    from invkit.losses import FeatureStyleLoss
    from invkit.recipe import Schedule
    from invkit.testing import tiny_stylegan2
    from invkit.training import train

    G = tiny_stylegan2(resolution=16, w_dim=16, max_channels=16, seed=3)
    recipe = tiny_recipe(schedule=Schedule(batch_real=2, batch_synthetic=1, epochs=2, iters_per_epoch=5, lr=1e-3,
                                           lr_drop_epochs=1),
                         checkpoint_every=4, log_every=2, sample_every=5)
    seen: list[float] = []
    loss = FeatureStyleLoss(PixelDistance(), recipe.loss, lpips_scales=2)

    def recording_loss(x, *rest):
        seen.extend(x[:2, 0, 0, 0].tolist())  # the real images this rank was given (tagged below)
        return loss(x, *rest)

    # 8 real images, image i constant-tagged in one pixel so ranks can report which they saw
    real = g_images(G, 8, 1)
    real[:, 0, 0, 0] = torch.arange(8) / 10
    result = train(recipe, real, G, out, loss=recording_loss, progress=False, device="cpu")
    rank = int(os.environ["RANK"])
    tensorfile.save(Path(out) / f"rank{rank}.safetensors", dict(result.encoder.state_dict()),
                    {"kind": "test-rank", "rank": rank, "world": int(os.environ["WORLD_SIZE"]),
                     "step": result.step, "seen": seen})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_train_to_identical_weights(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # the `torchrun` entry point
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [*torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(Path(__file__).resolve()), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    from invkit.io import tensorfile
    from invkit.training import latest_checkpoint, load_checkpoint

    (w0, m0), (w1, m1) = (tensorfile.load(out / f"rank{r}.safetensors") for r in (0, 1))
    assert m0["world"] == m1["world"] == 2 and m0["step"] == m1["step"] == 10
    assert w0.keys() == w1.keys()
    for k in w0:  # parameters and BatchNorm buffers
        assert torch.equal(w0[k], w1[k]), k
    # the ranks trained on disjoint shards of the real images
    seen0, seen1 = set(m0["seen"]), set(m1["seen"])
    assert seen0 and seen1 and not seen0 & seen1 and len(seen0 | seen1) >= 6
    # rank 0 wrote the files: the checkpoint holds both ranks' random streams and data positions
    state = load_checkpoint(latest_checkpoint(out))
    assert state.step == 10 and len(state.rng) == 2 and len(state.data) == 2
    assert not torch.equal(state.rng[0]["engine"], state.rng[1]["engine"])
    earlier = load_checkpoint(out / "checkpoints" / "step-00000004.safetensors")
    assert any(not torch.equal(earlier.model[k], w0[k]) for k in w0)  # it trained
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines] == [2, 4, 6, 8, 10]
    assert (out / "encoder.safetensors").is_file() and not (out / "rank2.safetensors").exists()


if __name__ == "__main__":
    worker(sys.argv[1])
