"""`dltrain validate` composes with Hydra's compose API the config a run composes, from the same folders."""

from __future__ import annotations

import pytest
import yaml

from conftest import dltrain_command, only_run_dir


def test_validate_checks_the_presets_a_run_of_the_same_config_dir_trains_with(tmp_path):
    (tmp_path / "conf" / "optimizer").mkdir(parents=True)
    for name in ("adam", "nadam"):  # a shipped preset's name (Hydra takes the shipped one), and a new one
        (tmp_path / "conf" / "optimizer" / f"{name}.yaml").write_text(
            f"_target_: torch.optim.{name.title().replace('Nadam', 'NAdam')}\n_partial_: true\nlr: -1\n")
    folder = f"--config-dir={tmp_path / 'conf'}"
    run = [folder, "data=iris", "trainer=cpu", "trainer.max_epochs=1"]
    assert dltrain_command("validate", *run, "optimizer=adam", cwd=tmp_path).returncode == 0
    assert dltrain_command(*run, "optimizer=adam", cwd=tmp_path).returncode == 0
    assert yaml.safe_load((only_run_dir(tmp_path) / "config.yaml").read_text())["optimizer"]["lr"] == 0.001
    for command in (["validate", *run], run):
        proc = dltrain_command(*command, "optimizer=nadam", cwd=tmp_path)
        assert (proc.returncode, proc.stderr.strip()) == (
            1, "dltrain: error: optimizer.lr=-1 is not valid: expected a number > 0"), command


@pytest.mark.parametrize("keys, said", [
    (["+foo=1", "+optimiser=sgd"], "2 mistakes in the config: (1) foo is not a key of dltrain's config, so it would "
     "be ignored: dltrain --help lists the groups and keys; (2) optimiser is not a key of dltrain's config, so it "
     "would be ignored: did you mean optimizer=... (a config group: no + in front)?"),
    (["seed=x", "data.val_fraction=2"], "2 mistakes in the config: (1) seed='x' is not valid: expected an integer "
     ">= 0; (2) data.val_fraction=2 is not valid: expected a number in (0, 1)"),
    (["optimizer.lr=-1", "+callbacks.early_stoping.patience=3"], "2 mistakes in the config: (1) optimizer.lr=-1 is "
     "not valid: expected a number > 0; (2) callbacks.early_stoping.patience names no callback of this config"),
])
def test_every_mistake_of_a_config_is_named_together_in_one_line_by_validate_and_the_run(tmp_path, keys, said):
    for command in (["validate", *keys], ["trainer=cpu", *keys]):
        proc = dltrain_command(*command, cwd=tmp_path)
        assert proc.returncode == 1 and proc.stderr.startswith(f"dltrain: error: {said}"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("outputs/runs/*"))  # the refused run left no folder
