"""Two-process DDP on CPU (gloo), launched the way users launch it: a script calling fit(strategy="ddp")."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch
    from lightning.pytorch import Callback

    from stnkit.training import TrainConfig, fit

    out, data = Path(sys.argv[1]), sys.argv[2]

    class SaveRankWeights(Callback):
        first_batch = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.first_batch is None:
                self.first_batch = batch[0].clone()

        def on_train_end(self, trainer, pl_module):
            state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            torch.save({"state": state, "world_size": trainer.world_size, "step": trainer.global_step,
                        "first_batch": self.first_batch}, out / f"rank{trainer.global_rank}.pt")

    config = TrainConfig(dataset="rts", model="st-cnn", recipe="smoke", data_dir=data, out=str(out / "run"),
                         train_subset=128, val_subset=32, test_subset=32, steps=4, eval_every=4, batch_size=16,
                         param_budget=20_000, progress=False, accelerator="cpu", devices=2, strategy="ddp",
                         threads=1)
    metrics = fit(config, callbacks=[SaveRankWeights()])
    print("METRICS", metrics["world_size"], metrics["steps"])
""")


@pytest.mark.slow
def test_two_process_ddp_agrees(mnist_dir, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(mnist_dir)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["step"] == r1["step"] == 4
    assert not torch.equal(r0["first_batch"], r1["first_batch"])  # each rank trains on its own shard
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    init = torch.load(tmp_path / "run/checkpoints/history/step-0000000.ckpt", weights_only=True)["state_dict"]
    assert any(not torch.equal(init[k], r0["state"][k]) for k in init)  # it did train
    assert (tmp_path / "run/metrics.json").is_file()  # written once, by rank 0
