"""Resuming training from a checkpoint gives the same model as never stopping: weights, optimiser, schedule,
data position and RNG all continue where the checkpoint left them.

The first test runs the loop in process (seconds); the second SIGKILLs a Ray Train worker inside a real
sweep trial and checks the retried trial picked up from the checkpoint.
"""

from __future__ import annotations

import pytest
import torch

from tests.test_train_sft import refusal_features, tiny_config
from trainables.checkpoints import read_resume_state, restore_weights, save_checkpoint
from trainables.sft import load_model, run_training


def trained_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


@pytest.mark.slow  # three short training runs; seconds on a quiet machine
def test_a_loop_resumed_mid_epoch_ends_with_the_weights_of_an_undisturbed_run(tiny_model_dir, char_tokenizer,
                                                                              tmp_path):
    # LoRA dropout on, so the RNG state matters; 24 examples at batch 4: 6 steps per epoch, 12 in all.
    cfg = tiny_config(tiny_model_dir, tmp_path, finetune="lora", lora={"r": 4, "alpha": 8, "dropout": 0.2},
                      train={"learning_rate": 5e-3, "epochs": 2, "per_device_batch_size": 4,
                             "max_seq_length": 256, "warmup_ratio": 0.2, "save_every_steps": 4})
    features, pad = refusal_features(char_tokenizer), char_tokenizer.pad_token_id
    device = torch.device("cpu")

    undisturbed = load_model(str(tiny_model_dir), cfg, device)
    saved = []

    def keep(log, metrics, steps, state, name):
        folder = tmp_path / name
        save_checkpoint(undisturbed, char_tokenizer, folder, cfg, log, resume=state)
        saved.append(name)

    full_log = run_training(undisturbed, features, cfg, device=device, pad_id=pad, progress=False,
                            on_checkpoint=keep)
    assert saved == ["step_4", "step_8", "final"]  # step 12 ends epoch 2: it is the final checkpoint

    # A restart from step 4 (inside epoch 1) and one from step 8 (inside epoch 2) both end where it did.
    for name, at in (("step_4", 4), ("step_8", 8)):
        resumed = load_model(str(tiny_model_dir), cfg, device)
        restore_weights(resumed, tmp_path / name, cfg)
        state = read_resume_state(tmp_path / name, rank=0)
        assert state.step == at and len(state.log.step_losses) == at
        log = run_training(resumed, features, cfg, device=device, pad_id=pad, progress=False, resume=state)
        assert log.resumed_at_steps == [at]
        assert log.step_losses == full_log.step_losses  # bit for bit, and no step counted twice
        assert [m["epoch"] for m in log.epoch_metrics] == [1, 2]
        assert log.epoch_metrics[-1]["epoch_loss"] == full_log.epoch_metrics[-1]["epoch_loss"]
        for key, value in trained_weights(undisturbed).items():
            assert torch.equal(trained_weights(resumed)[key], value), key

    # The final checkpoint carries no optimiser state, and a restart there trains nothing more.
    final = read_resume_state(tmp_path / "final", rank=0)
    assert final.optimizer is None and final.step == 12
    again = run_training(load_model(str(tiny_model_dir), cfg, device), features, cfg, device=device, pad_id=pad,
                         progress=False, resume=final)
    assert again.step_losses == full_log.step_losses


def test_reading_each_step_back_one_step_late_changes_nothing(tiny_model_dir, char_tokenizer, tmp_path, monkeypatch):
    """The GPU loop defers each step's host read by one step; run here on the CPU, it must match the plain loop:
    the same losses, checkpoints at the same steps with the same state, and reports of the same steps in order."""
    from trainables import sft

    cfg = tiny_config(tiny_model_dir, tmp_path, finetune="lora", lora={"r": 4, "alpha": 8, "dropout": 0.2},
                      train={"learning_rate": 5e-3, "epochs": 2, "per_device_batch_size": 4,
                             "max_seq_length": 256, "warmup_ratio": 0.2, "save_every_steps": 4})
    features, pad = refusal_features(char_tokenizer), char_tokenizer.pad_token_id

    def run(deferred: bool):
        monkeypatch.setattr(sft, "defers_readback", lambda device: deferred)
        model = load_model(str(tiny_model_dir), cfg, torch.device("cpu"))
        events = []
        log = run_training(
            model, features, cfg, device=torch.device("cpu"), pad_id=pad, progress=False, report_interval_s=0.0,
            on_step=lambda steps: events.append(("report", [s["step"] for s in steps])),
            on_epoch_end=lambda log, last, steps: events.append(("epoch", [s["step"] for s in steps])),
            on_checkpoint=lambda log, metrics, steps, state, name: events.append(
                (name, [s["step"] for s in steps], state.step, list(state.log.step_losses))))
        return log, events, trained_weights(model)

    plain_log, plain_events, plain_weights = run(deferred=False)
    late_log, late_events, late_weights = run(deferred=True)
    assert late_log.step_losses == plain_log.step_losses and len(plain_log.step_losses) == 12
    assert [m["epoch_loss"] for m in late_log.epoch_metrics] == [m["epoch_loss"] for m in plain_log.epoch_metrics]
    checkpoints = [e for e in plain_events if e[0].startswith(("step_", "final"))]
    assert [(e[0], e[2]) for e in checkpoints] == [("step_4", 4), ("step_8", 8), ("final", 12)]
    assert late_events == plain_events
    # Every step is reported exactly once, in order, on both paths.
    for events in (plain_events, late_events):
        assert [step for event in events for step in event[1]] == list(range(1, 13))
    for key, value in plain_weights.items():
        assert torch.equal(late_weights[key], value), key


def _weights_after_epochs(tiny_model_dir, char_tokenizer, tmp_path, scheduler: str, epochs: int,
                          keep_epoch: int) -> dict[str, torch.Tensor]:
    """Train `epochs` epochs and return the trained weights as they were at the end of epoch `keep_epoch`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(tiny_model_dir, tmp_path, finetune="lora", lora={"r": 4, "alpha": 8, "dropout": 0.2},
                      train={"learning_rate": 5e-3, "epochs": epochs, "per_device_batch_size": 4,
                             "max_seq_length": 256, "scheduler": scheduler, "warmup_ratio": 0.0,
                             "save_every_epoch": True})
    model = load_model(str(tiny_model_dir), cfg, torch.device("cpu"))
    kept = {}

    def keep(log, metrics, steps, state, name):
        if metrics["epoch"] == keep_epoch:
            kept.update(trained_weights(model))

    run_training(model, refusal_features(char_tokenizer), cfg, device=torch.device("cpu"),
                 pad_id=char_tokenizer.pad_token_id, progress=False, on_checkpoint=keep)
    return kept


@pytest.mark.slow  # four short training runs; seconds on a quiet machine
def test_with_a_constant_schedule_epoch_2_of_a_4_epoch_run_is_the_2_epoch_run(tiny_model_dir, char_tokenizer,
                                                                               tmp_path):
    # Data order (the sampler's seed and epoch), dropout masks and the schedule do not depend on the run's
    # length, so the longer run passes through the shorter one exactly: epochs can be read for free.
    longer = _weights_after_epochs(tiny_model_dir, char_tokenizer, tmp_path / "4", "constant", 4, keep_epoch=2)
    shorter = _weights_after_epochs(tiny_model_dir, char_tokenizer, tmp_path / "2", "constant", 2, keep_epoch=2)
    assert longer.keys() == shorter.keys() and longer
    for key, value in shorter.items():
        assert torch.equal(longer[key], value), key
    # A cosine schedule decays over the whole run: its epoch 2 is not the 2-epoch run.
    longer = _weights_after_epochs(tiny_model_dir, char_tokenizer, tmp_path / "c4", "cosine", 4, keep_epoch=2)
    shorter = _weights_after_epochs(tiny_model_dir, char_tokenizer, tmp_path / "c2", "cosine", 2, keep_epoch=2)
    assert any(not torch.equal(longer[key], value) for key, value in shorter.items())


@pytest.mark.slow  # four short training runs; seconds on a quiet machine
def test_a_run_paused_after_each_epoch_ends_with_the_weights_of_an_undisturbed_run(tiny_model_dir, char_tokenizer,
                                                                                   tmp_path):
    # A sweep that reads every epoch trains one epoch per stage (stop_after_epoch), each resumed from the
    # last: with a cosine schedule over the whole run, warm-up and dropout on, it must end where one run ends.
    cfg = tiny_config(tiny_model_dir, tmp_path, finetune="lora", lora={"r": 4, "alpha": 8, "dropout": 0.2},
                      train={"learning_rate": 5e-3, "epochs": 3, "per_device_batch_size": 4,
                             "max_seq_length": 256, "scheduler": "cosine", "warmup_ratio": 0.2,
                             "save_every_epoch": True})
    features, pad, device = refusal_features(char_tokenizer), char_tokenizer.pad_token_id, torch.device("cpu")
    undisturbed = load_model(str(tiny_model_dir), cfg, device)
    full_log = run_training(undisturbed, features, cfg, device=device, pad_id=pad, progress=False)

    state, names = None, []
    for epoch in (1, 2, 3):
        model = load_model(str(tiny_model_dir), cfg, device)
        if state is not None:
            restore_weights(model, tmp_path / names[-1], cfg)

        def keep(log, metrics, steps, saved_state, name, model=model):
            save_checkpoint(model, char_tokenizer, tmp_path / name, cfg, log, resume=saved_state)
            names.append(name)

        log = run_training(model, features, cfg, device=device, pad_id=pad, progress=False, on_checkpoint=keep,
                           resume=state, stop_after_epoch=epoch)
        assert [m["epoch"] for m in log.epoch_metrics] == list(range(1, epoch + 1))
        state = read_resume_state(tmp_path / names[-1], rank=0)
        # A stage asked again (a retried trial) trains nothing: it is already past that epoch.
        again = run_training(load_model(str(tiny_model_dir), cfg, device), features, cfg, device=device, pad_id=pad,
                             progress=False, resume=state, stop_after_epoch=epoch)
        assert again.step_losses == log.step_losses
    assert names == ["epoch_1", "epoch_2", "final"]
    assert log.step_losses == full_log.step_losses
    for key, value in trained_weights(undisturbed).items():
        assert torch.equal(trained_weights(model)[key], value), key
    with pytest.raises(ValueError, match="save_every_epoch"):
        plain = cfg.model_copy(update={"train": cfg.train.model_copy(update={"save_every_epoch": False})})
        run_training(model, features, plain, device=device, pad_id=pad, progress=False, stop_after_epoch=1)
