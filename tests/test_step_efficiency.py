"""The step recorder behind ``make bench``'s ``cpu_step_efficiency_<loop>`` figures
(``benchmarks/step_recorder.py``, ``benchmarks/cpu_step_efficiency.py``), on hand-made loops."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.optim import optimizer as optimizer_hooks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import cpu_step_efficiency  # noqa: E402  (benchmark scripts, not a package)
from step_recorder import OptimizerStep, StepRecorder, replay, replay_iteration  # noqa: E402


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))


def toy_loop(model: nn.Module, steps: int, sleep: float = 0.0, fail_at: int | None = None):
    """SGD on one batch kept in memory; ``sleep`` seconds of other work per step, outside the
    model (what a harness adds)."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 16), torch.randn(32, 4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for step in range(steps):
        if step == fail_at:
            raise RuntimeError("the loop broke")
        if sleep:
            time.sleep(sleep)
        out = model(x)
        loss = sum(nn.functional.mse_loss(o, y[:, :o.shape[1]]) for o in
                   (out if isinstance(out, tuple) else (out,)) if o.is_floating_point())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return opt


def global_hooks() -> tuple[int, int, int]:
    return (len(module_hooks._global_forward_pre_hooks), len(module_hooks._global_forward_hooks),
            len(optimizer_hooks._global_optimizer_post_hooks))


def efficiency(sleep: float) -> float:
    with StepRecorder("cpu", warmup=2, capture=2) as recorder:
        toy_loop(mlp(), 30, sleep)
    assert recorder.steps == 30
    assert recorder.timed_steps == 27  # from the step that ends the capture on
    bare = replay(recorder.iterations, min_iterations=20, min_seconds=0.05)
    return recorder.steps_per_second() / bare.per_second


def test_steps_are_counted_and_work_outside_the_model_lowers_the_efficiency():
    slow, fast = efficiency(sleep=0.01), efficiency(sleep=0.0)
    assert slow < 0.5  # a step of the bare MLP is a fraction of a millisecond
    assert fast > 2 * slow


def test_the_replay_runs_the_captured_modules_outermost_calls_only():
    model = mlp()
    calls = {"model": 0, "inner": 0}
    model.register_forward_hook(lambda *_: calls.__setitem__("model", calls["model"] + 1))
    model[0].register_forward_hook(lambda *_: calls.__setitem__("inner", calls["inner"] + 1))
    with StepRecorder(warmup=2, capture=3) as recorder:
        opt = toy_loop(model, 8)
    assert len(recorder.iterations) == 3
    for iteration in recorder.iterations:
        assert [c.module for c in iteration.calls] == [model]  # not its Linear / ReLU layers
        assert isinstance(iteration.events[-1], OptimizerStep) and iteration.events[-1].optimizer is opt
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls.update(model=0, inner=0)
    replay_iteration(recorder.iterations[0], list(model.parameters()))
    assert calls == {"model": 1, "inner": 1}
    assert all(p.grad is not None for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it stepped
    timing = replay(recorder.iterations, min_iterations=6, min_seconds=0.0)
    assert timing.iterations == 6 and calls["model"] > 6


class FrozenTrunkTwoHeads(nn.Module):
    """A frozen stage kept in eval mode by ``train()`` (as Classifier and FCN32s do), and a tuple
    output with an integer member."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.5))
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.cls, self.box = nn.Linear(32, 3), nn.Linear(32, 4)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, x):
        h = self.frozen(x)
        scores = self.cls(h)
        return scores, self.box(h), scores.argmax(1)


def test_tuple_outputs_frozen_parameters_and_the_loop_modes_are_replayed():
    model = FrozenTrunkTwoHeads()
    with StepRecorder(warmup=1, capture=1) as recorder:
        toy_loop(model, 4)
    model.eval()  # as a task's predict leaves it: the replay must restore the loop's modes
    seen = {}
    model.frozen[1].register_forward_pre_hook(lambda m, _: seen.__setitem__("dropout", m.training))
    model.cls.register_forward_pre_hook(lambda m, _: seen.__setitem__("cls", m.training))
    replay_iteration(recorder.iterations[0], list(model.parameters()))  # grads cleared first
    assert seen == {"dropout": False, "cls": True}
    assert all(p.grad is None for p in model.frozen.parameters())
    assert all(p.grad is not None for p in (*model.cls.parameters(), *model.box.parameters()))


def test_an_input_that_required_grad_gets_its_gradient_and_may_be_changed_in_place():
    encoder, head = nn.Linear(16, 32), nn.Sequential(nn.ReLU(inplace=True), nn.Linear(32, 4))
    x, y = torch.randn(8, 16), torch.randn(8, 4)
    opt = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.01)
    with StepRecorder(warmup=1, capture=1) as recorder:
        for _ in range(4):
            loss = nn.functional.mse_loss(head(encoder(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    calls = recorder.iterations[0].calls
    assert [c.module for c in calls] == [encoder, head]
    leaf = calls[1].args[0]
    assert leaf.requires_grad and leaf.is_leaf
    for _ in range(2):  # the in-place ReLU works on a copy: the captured input is unchanged
        replay_iteration(recorder.iterations[0], [leaf])
    assert leaf.grad is not None and (leaf < 0).any()


def test_the_first_optimizer_to_step_is_primary_and_both_steps_are_replayed():
    disc, gen = nn.Linear(4, 1), nn.Linear(2, 4)
    opt_d = torch.optim.Adam(disc.parameters())
    opt_g = torch.optim.Adam(gen.parameters())
    with StepRecorder(warmup=2, capture=1) as recorder:
        for _ in range(6):
            fake = gen(torch.randn(8, 2))
            loss_d = disc(fake.detach()).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = -disc(fake).mean()
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
    assert recorder.primary is opt_d and recorder.steps == 6
    assert recorder.step_counts == {opt_d: 6, opt_g: 6}
    events = recorder.iterations[0].events
    steps = [e.optimizer for e in events if isinstance(e, OptimizerStep)]
    assert steps == [opt_g, opt_d]  # G's step of one iteration, then D's of the next
    assert [type(e.module) for e in events if not isinstance(e, OptimizerStep)] == [nn.Linear] * 3
    assert replay(recorder.iterations, min_iterations=3, min_seconds=0.0).iterations == 3


def test_hooks_are_removed_when_the_context_exits_also_after_an_error():
    before = global_hooks()
    with StepRecorder(warmup=1, capture=5):
        toy_loop(mlp(), 3)  # exits in the middle of the capture
        assert global_hooks() == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert global_hooks() == before
    with pytest.raises(RuntimeError, match="broke"):
        with StepRecorder(warmup=1, capture=5):
            toy_loop(mlp(), 10, fail_at=3)
    assert global_hooks() == before
    with StepRecorder(warmup=1, capture=1):
        toy_loop(mlp(), 4)  # the capture is over: only the optimizer hook is left
        assert global_hooks() == (before[0], before[1], before[2] + 1)
    assert global_hooks() == before


def test_a_loop_too_short_to_time_is_an_error():
    with StepRecorder(warmup=3, capture=3) as recorder:
        toy_loop(mlp(), 6)
    with pytest.raises(ValueError, match="6 optimizer steps"):
        recorder.steps_per_second()


def test_figures_are_named_after_the_device_and_the_loops_exist():
    detail = {"sound": {"efficiency": 0.91}, "det": {"efficiency": 0.5}}
    cpu = cpu_step_efficiency.figures(detail, torch.device("cpu"), 12.34)
    assert cpu == {"cpu_step_efficiency_sound": 0.91, "cpu_step_efficiency_det": 0.5,
                   "cpu_step_efficiency_detail": detail, "cpu_step_efficiency_seconds": 12.3}
    assert "cuda_step_efficiency_det" in cpu_step_efficiency.figures(detail, torch.device("cuda"), 1)
    from benchharness.plugins import Registry

    registry = Registry()
    methods, tasks = registry.methods(), registry.tasks()
    from benchharness.suite import load_suite

    for loop in cpu_step_efficiency.LOOPS:
        if loop.kind == "methods":
            assert loop.plugin in methods
            assert loop.plugin in load_suite(loop.suite).methods  # measured with the settings it runs with
        else:
            assert loop.protocol in tasks[loop.plugin].protocols
    assert len(cpu_step_efficiency.LOOP_NAMES) == 18
