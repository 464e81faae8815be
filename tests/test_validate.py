"""`dltrain validate` composes with Hydra's compose API the config a run composes, from the same folders."""

from __future__ import annotations

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
