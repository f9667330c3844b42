"""The config schema: defaults, overrides, errors that name the key, the shipped configs."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from shardgraph.config import config_from_dict, default_config, dump_config, load_config
from shardgraph.errors import ConfigError
from tests.conftest import REPO


def test_defaults_round_trip_through_toml() -> None:
    text = dump_config(default_config(), commented=True)
    assert "# learning rate of the embeddings" in text
    assert config_from_dict(tomllib.loads(text)) == default_config()


def test_cli_prints_commented_defaults() -> None:
    out = subprocess.run([sys.executable, "-m", "shardgraph", "config", "defaults"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert config_from_dict(tomllib.loads(out)) == default_config()
    assert out.count("# ") > 40  # every key has its help line


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_validate(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize(("override", "message"), [
    ("training.lr=-1", r"training\.lr must be > 0\. Got -1 instead\."),
    ("training.lrr=0.1", r"Unknown config key 'training\.lrr'\. Did you mean 'training\.lr'\?"),
    ("trainig.lr=0.1", r"Unknown config key 'trainig'\. Did you mean 'training'\?"),
    ("model.comparator=dott", r"model\.comparator must be one of 'dot', 'cos', 'l2', 'squared_l2'\. Got 'dott'"),
    ("training.epochs=1.5", r"training\.epochs must be an integer\. Got 1\.5 instead\."),
    ("model.dimension=7", r"model\.dimension must be even for complex_diagonal"),
    ("storage.buffer_partitions=1", r"storage\.buffer_partitions must be 0 \(all\) or >= 2"),
    ("relations.0.name=x", r"relations has 0 entries"),
    ("training", r"An override must look like section\.key=value"),
    ("training.sampling_correction=true", r"training\.sampling_correction needs model\.loss = \"softmax\"\. Got "
                                          r"'ranking' instead\."),
    ("training.all_negs=true", r"training\.sampling_correction corrects for sampled negatives; with "
                               r"training\.all_negs = true"),
])
def test_bad_values_name_the_key(override: str, message: str) -> None:
    extra = ["model.operator=complex_diagonal"] if "dimension" in override else []
    extra += ["model.loss=ranking"] if "sampling_correction" in override else []
    extra += ["model.loss=softmax", "training.sampling_correction=true"] if "all_negs" in override else []
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*extra, override])


def test_overrides_parse_toml_values_and_bare_strings() -> None:
    config = load_config(None, ["training.lr=0.05", "model.comparator=cos", "training.all_negs=true",
                                'relations=[{name="follows", operator="translation"}]',
                                "entities.entity.partitions=4"])
    assert config.training.lr == 0.05 and config.model.comparator == "cos" and config.training.all_negs
    assert config.relations[0].name == "follows" and config.relations[0].operator == "translation"
    assert config.entities["entity"].partitions == 4 and not config.is_dynamic()


def test_relation_must_name_declared_types(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[entities.user]\n[[relations]]\nname = "buys"\nlhs = "user"\nrhs = "item"\n')
    with pytest.raises(ConfigError, match=r"rhs names entity type 'item', which is not declared"):
        load_config(path)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[training\nlr = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_the_python_api_names_are_the_functions() -> None:
    # subpackages must not shadow the documented functions once they are imported
    import shardgraph
    import shardgraph.embeddings.writers
    import shardgraph.training.trainer

    for name in ("train", "export", "load", "evaluate", "import_edges", "load_config"):
        assert callable(getattr(shardgraph, name)), name


def test_defaults_round_trip_through_the_dict_workers_receive() -> None:
    """Worker processes rebuild the config from `to_dict()`: every section's defaults (empty tables
    included) must survive it."""
    from shardgraph.config import config_from_dict

    config = load_config(None)
    assert config_from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="entities must name at least one entity type"):
        load_config(None, ["entities={}"])
