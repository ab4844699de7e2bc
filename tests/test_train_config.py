"""AlignConfig and `safetytax train`: shipped configs load, and every bad input is named before Ray starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trainables.config import AlignConfig
from trainables.schema import ConfigError, field_help, load

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "trainables" / "configs").glob("*.yaml"))


@pytest.fixture
def config_file(tmp_path, tiny_model_dir) -> Path:
    """A valid config: the tiny random model and 10 refusal pairs in a local JSONL file."""
    data = tmp_path / "refusals.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"harmful request {i}?", "refusal": "No."}) + "\n"
                            for i in range(10)))
    config = {"name": "bad-input", "model": str(tiny_model_dir), "output_dir": str(tmp_path / "runs"),
              "data": {"path": str(data), "format": "pairs", "response_column": "refusal"}}
    path = tmp_path / "align.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load_and_name_their_command(path):
    cfg = load(AlignConfig, path)
    assert cfg.output_dir.is_absolute()
    assert f"safetytax train trainables/configs/{path.name}" in path.read_text().split("\n", 3)[1]


def test_every_field_has_help_text():
    missing = [key for key, _, text in field_help(AlignConfig) if not text]
    assert missing == []


@pytest.mark.parametrize("override, field", [
    ("train.learnig_rate=1e-4", "train.learnig_rate: unknown key"),
    ("train.learning_rate=0", "train.learning_rate"),
    ("train.learning_rate=-1e-5", "train.learning_rate"),
    ("train.epochs=0", "train.epochs"),
    ("lora.r=0", "lora.r"),
    ("reasoning_mix=1.0", "reasoning_mix"),
    ("reasoning_mix=-0.1", "reasoning_mix"),
    ("reasoning_mix=0.3", "reasoning_mix=0.3 needs reasoning_data"),
    ("data.size=0", "data.size"),
    ("train.fsdp=true", "train.fsdp needs finetune: full"),
    ("train.per_device_batch_size=0", "train.per_device_batch_size"),
])
def test_impossible_values_fail_at_load_naming_the_field(config_file, override, field):
    with pytest.raises(ConfigError) as err:
        load(AlignConfig, config_file, [override])
    assert field in str(err.value)


def test_fsdp_needs_gpus(config_file):
    with pytest.raises(ConfigError, match="train.fsdp needs scaling.use_gpu"):
        load(AlignConfig, config_file, ["finetune=full", "train.fsdp=true"])
    assert load(AlignConfig, config_file, ["finetune=full", "train.fsdp=true", "scaling.use_gpu=true"]).train.fsdp


def test_local_mode_is_for_cpus(config_file):
    with pytest.raises(ConfigError, match="num_workers: 0 .* trains on CPU"):
        load(AlignConfig, config_file, ["scaling.num_workers=0", "scaling.use_gpu=true"])
    with pytest.raises(ConfigError, match="scaling.num_workers"):
        load(AlignConfig, config_file, ["scaling.num_workers=-1"])
    scaling = load(AlignConfig, config_file, ["scaling.num_workers=0"]).scaling
    assert scaling.local_mode and scaling.world_size == 1


def test_model_directory_without_config_is_named(config_file, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"model: .*{empty} has no config.json"):
        load(AlignConfig, config_file, [f"model={empty}"])
    with pytest.raises(ConfigError, match="model: .*does not exist"):
        load(AlignConfig, config_file, ["model=./no/such/model"])
    # Hub ids and tiny:// paths are resolved at run time, not at load.
    assert load(AlignConfig, config_file, ["model=simplescaling/s1.1-32B"]).model == "simplescaling/s1.1-32B"


def test_print_config_shows_the_resolved_config(config_file, capsys):
    from sweeps.cli import main

    assert main(["train", str(config_file), "train.learning_rate=3e-4", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["learning_rate"] == 3e-4
    assert printed["lora"]["target_modules"] == "all-linear"  # defaults are filled in
    assert AlignConfig.model_validate(printed) == load(AlignConfig, config_file, ["train.learning_rate=3e-4"])


@pytest.mark.parametrize("overrides, message", [
    (["bogus=1"], "bogus: unknown key"),
    (["data.path=/no/such/refusals.jsonl"], "data.path: file /no/such/refusals.jsonl does not exist"),
    (["data.response_column=safe"], "column 'safe' not found"),
    (["data.size=11"], "data.size: 11 rows asked for"),
    (["train.max_seq_length=8"], "train.max_seq_length=8 cuts every example"),
])
def test_cli_exits_2_naming_the_problem_before_ray_starts(config_file, capsys, overrides, message):
    import ray

    from sweeps.cli import main

    assert main(["train", str(config_file), *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()


def test_cli_names_a_model_directory_that_lost_its_config(config_file, tiny_model_dir, tmp_path, capsys):
    import shutil

    import ray

    from sweeps.cli import main

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").unlink()
    assert main(["train", str(config_file), f"model={broken}"]) == 2
    assert f"{broken} has no config.json" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_unreadable_data_file_is_named(config_file, tmp_path, capsys):
    import ray

    from sweeps.cli import main

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n")
    assert main(["train", str(config_file), f"data.path={garbage}"]) == 2
    assert f"cannot read {garbage}" in capsys.readouterr().err
    assert not ray.is_initialized()
