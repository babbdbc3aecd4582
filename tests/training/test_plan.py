"""The training plan, pure: batches per worker, steps per epoch, validation steps and the resume fingerprint."""

from __future__ import annotations

import pytest

from facescale.config import TrainingSettings
from facescale.errors import ConfigError
from facescale.training.plan import LEGACY_SETTINGS, full_batches, plan_run, upgraded

SETTINGS = TrainingSettings(batch_size=8)


def test_one_machine_runs_every_full_global_batch_of_the_train_split() -> None:
    plan = plan_run(SETTINGS, "v1", train_examples=70, val_examples=20, replicas=2)
    assert (plan.global_batch, plan.worker_batch, plan.steps) == (16, 16, 4)  # 70 // 16; the rest waits
    assert plan.validation_steps is None  # one machine validates on the whole val split
    assert plan.fingerprint["steps_per_epoch"] == 4 and plan.fingerprint["replicas"] == 2
    assert "workers" not in plan.fingerprint and "warm_start" not in plan.fingerprint


def test_workers_share_the_global_batch_and_the_smallest_shard_sets_the_epoch() -> None:
    plan = plan_run(SETTINGS, "v1", train_examples=70, val_examples=80, replicas=4, workers=2, validation_steps=9)
    assert (plan.global_batch, plan.worker_batch) == (32, 16)
    assert plan.steps == 2  # 35 examples per worker shard // 16
    assert plan.validation_steps == 2 == full_batches(80, 16, 2)  # capped: every worker runs the same number
    assert plan.fingerprint["workers"] == 2


def test_steps_are_capped_and_every_input_of_the_run_is_in_its_fingerprint() -> None:
    base = plan_run(SETTINGS, "v1", train_examples=800, val_examples=80)
    capped = plan_run(SETTINGS, "v1", train_examples=800, val_examples=80, max_steps_per_epoch=5)
    assert (base.steps, capped.steps) == (100, 5)
    warm = plan_run(SETTINGS, "v1", train_examples=800, val_examples=80, warm_start={"model_sha256": "ab"})
    other = plan_run(TrainingSettings(batch_size=8, seed=7), "v1", train_examples=800, val_examples=80)
    fingerprints = [p.fingerprint for p in (base, capped, warm, other)]
    assert all(a != b for i, a in enumerate(fingerprints) for b in fingerprints[i + 1 :])
    assert warm.fingerprint["warm_start"] == {"model_sha256": "ab"}


def test_a_split_smaller_than_a_global_batch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        plan_run(SETTINGS, "v1", train_examples=15, val_examples=5, replicas=2)
    with pytest.raises(ConfigError, match="val split of v1 is smaller"):
        plan_run(SETTINGS, "v1", train_examples=64, val_examples=10, replicas=2, workers=2)  # 5 per worker < 8


def test_a_run_saved_before_a_setting_existed_still_matches_its_fingerprint(tmp_path) -> None:
    """An epoch checkpoint written before ``training.head`` (and its cosface values) existed resumes under
    the upgrade when the settings mean the same run; a run that asks for the new behaviour does not."""
    import json

    from facescale.errors import ConflictError
    from facescale.training.callbacks import STATE_FILE, EpochCheckpoint

    plan = plan_run(SETTINGS, "v1", train_examples=800, val_examples=80)
    old = json.loads(json.dumps(plan.fingerprint))
    for key in LEGACY_SETTINGS:
        del old["settings"][key]
    state = {"epoch": 2, "weights": None, "finished": False, "fingerprint": old, "states": {}}
    (tmp_path / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
    assert upgraded(old) == json.loads(json.dumps(plan.fingerprint))
    with pytest.raises(ConflictError, match="differs in: settings"):
        EpochCheckpoint.load(tmp_path, plan.fingerprint)
    saved = EpochCheckpoint.load(tmp_path, plan.fingerprint, upgrade=upgraded)
    assert saved is not None and saved.epoch == 2
    cosface = plan_run(TrainingSettings(batch_size=8, head="cosface"), "v1", train_examples=800, val_examples=80)
    with pytest.raises(ConflictError, match="differs in: settings"):
        EpochCheckpoint.load(tmp_path, cosface.fingerprint, upgrade=upgraded)


def test_where_a_run_stops_is_not_part_of_what_it_computes() -> None:
    """The threshold, min_epochs and (under a constant rate) max_epochs can change between a run and its
    resume; the stop metric (it picks the best weights) and a cosine schedule's max_epochs cannot."""
    base = plan_run(SETTINGS, "v1", train_examples=800, val_examples=80).fingerprint
    moved = TrainingSettings(batch_size=8, stop_threshold=0.1, min_epochs=3, max_epochs=500)
    assert plan_run(moved, "v1", train_examples=800, val_examples=80).fingerprint == base
    metric = TrainingSettings(batch_size=8, stop_metric="val_loss")
    assert plan_run(metric, "v1", train_examples=800, val_examples=80).fingerprint != base
    cosine = [TrainingSettings(batch_size=8, lr_schedule="cosine", max_epochs=n) for n in (10, 20)]
    a, b = (plan_run(s, "v1", train_examples=800, val_examples=80).fingerprint for s in cosine)
    assert a != b and a["settings"]["max_epochs"] == 10


def test_a_run_saved_with_its_stop_in_the_fingerprint_resumes_under_a_new_stop(tmp_path) -> None:
    """Releases that kept the stop settings in the fingerprint: their runs resume under another threshold."""
    import json

    from facescale.training.callbacks import STATE_FILE, EpochCheckpoint

    plan = plan_run(SETTINGS, "v1", train_examples=800, val_examples=80)
    old = json.loads(json.dumps(plan.fingerprint))
    old["settings"] |= {"stop_threshold": 0.97, "min_epochs": 1, "max_epochs": 60}
    state = {"epoch": 4, "weights": None, "finished": False, "fingerprint": old, "states": {}}
    (tmp_path / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
    lowered = plan_run(TrainingSettings(batch_size=8, stop_threshold=0.2), "v1", train_examples=800, val_examples=80)
    saved = EpochCheckpoint.load(tmp_path, lowered.fingerprint, upgrade=upgraded)
    assert saved is not None and saved.epoch == 4
