"""PretextSteps, the step loop the step-based pretext methods share: a loop killed after a save
resumes at the next step and ends bit-identical to an uninterrupted one, saved extras come back,
progress written by another version is not trusted, and the running and guarded losses."""

from __future__ import annotations

import pytest
import torch

from benchharness.interfaces import RunContext
from benchharness.training import EpochCheckpoint, PretextSteps


def _ctx(state_dir, logs=None):
    return RunContext(torch.device("cpu"), 0, state_dir or ".", state_dir or ".", "alexnet-small",
                      state_dir=state_dir, progress=None, log=(logs.append if logs is not None else lambda m: None))


def _train(state_dir, steps=10, every=3, logs=None, extra=None):
    """A linear regression fitted by SGD with a schedule, drawing its batches from the loop's
    generator; returns (weights, loop)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 4, 0.5)
    gen = torch.Generator().manual_seed(0)
    truth = torch.tensor([[1.0, -2.0, 0.5]])
    loop = PretextSteps(_ctx(state_dir, logs), "toy", steps, every, {"model": model, "opt": opt, "sched": sched},
                        gen, extra=extra)
    for _ in loop:
        x = torch.randn(8, 3, generator=gen)
        loss = ((model(x) - x @ truth.T) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loop.record(loss)
    return torch.cat([model.weight.flatten(), model.bias]).detach(), loop


def test_a_loop_killed_after_a_save_resumes_there_and_ends_identical(tmp_path, monkeypatch):
    reference, _ = _train(None)
    saved_steps = []
    real_save = EpochCheckpoint.save

    def killed_after_second_save(self, state):
        real_save(self, state)
        saved_steps.append(state["step"])
        if len(saved_steps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochCheckpoint, "save", killed_after_second_save)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path)
    monkeypatch.setattr(EpochCheckpoint, "save", real_save)
    assert saved_steps == [3, 6]  # every 3 steps
    logs = []
    resumed, loop = _train(tmp_path, logs=logs)
    assert loop.first == 6 and loop.resumed["step"] == 6
    assert "resuming toy pretraining at step 7" in logs
    assert torch.equal(resumed, reference)
    assert torch.load(tmp_path / "progress.pt", weights_only=True)["step"] == 10  # the last step is saved


def test_extras_are_saved_and_given_back(tmp_path):
    calls = []
    _train(tmp_path, steps=4, every=2, extra=lambda: calls.append(1) or {"position": 17 * len(calls)})
    assert len(calls) == 2  # after step 2 and step 4
    _, loop = _train(tmp_path, steps=6, every=2)
    assert loop.first == 4 and loop.resumed["position"] == 34


def test_progress_of_another_version_starts_the_loop_over(tmp_path):
    EpochCheckpoint(tmp_path).save({"step": 5, "rng": torch.Generator().get_state()})  # no model, no gen
    logs = []
    _, loop = _train(tmp_path, steps=2, every=1, logs=logs)
    assert loop.resumed is None and loop.first == 0
    assert any("lacks ['model', 'opt', 'sched', 'gen']" in m for m in logs)


def test_running_losses_named_and_guarded(tmp_path):
    gen = torch.Generator()
    loop = PretextSteps(_ctx(None), "toy", 4, 2, {}, gen)
    seen = []
    for step in loop:
        loop.record(D=torch.tensor(1.0 + step, requires_grad=True), G=2.0)
        seen.append(dict(loop.running))
    assert seen[0] == {"D": 1.0, "G": 2.0}  # the first value as it is
    assert seen[1]["D"] == pytest.approx(0.9 * 1.0 + 0.1 * 2.0)  # then an exponential mean
    loop = PretextSteps(_ctx(None), "toy", 4, 2, {}, gen)
    with pytest.raises(FloatingPointError, match="toy pretraining: loss became nan in step 2"):
        for _ in loop:
            loop.record(float("nan"))
