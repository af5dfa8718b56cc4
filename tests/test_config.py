"""Job configs: validated keys, errors that name the file and the key."""

from __future__ import annotations

import pytest
import yaml

from intermodal.measures import MEASURES, load_config, parse_config, register, unregister
from intermodal.measures.base import Measure
from intermodal.measures.lsmi import LSMI
from intermodal.schemas.config import ConfigError, JobConfig, validate_config

VALID = """
dataset: demo
input: data/
output: runs/x
num_classes: 2
modalities:
  - {name: image, shape: [3, 4, 4]}
  - {name: text, column: text_embedding, shape: [16]}
model: {name: fcnn, factory: "intermodal.models.fcnn:build_fcnn"}
"""


def test_valid_config_with_defaults(tmp_path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(VALID)
    config = load_config(path)
    assert config.modalities[0].size == 48
    assert config.modalities[1].source_column == "text_embedding"
    assert config.intershap.masking == "background" and config.intershap.target == "predicted"
    assert config.compute.gpus_per_actor == 0


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        ("intershap: {maskng: zeros}", "intershap.maskng", "unknown key"),
        ("intershap: {masking: blur}", "intershap.masking", "background"),
        (
            "compute: {actors: 0}",
            "compute.actors",
            "a pool size >= 1, {min, max, initial} or 'auto'",
        ),
        ("compute: {actors: {min: 3, max: 2}}", "compute.actors", "min (3) must not exceed max"),
        ("typo_key: 1", "typo_key", "unknown key"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, edit, key, message) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(VALID + edit + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert f"{key}: " in str(error.value) and message in str(error.value)


def test_semantic_errors() -> None:
    base = {
        "dataset": "d",
        "input": "i",
        "output": "o",
        "num_classes": 2,
        "model": {"name": "m", "factory": "a.b:c"},
    }
    with pytest.raises(ConfigError, match="unique"):
        parse_config({**base, "modalities": [{"name": "x", "shape": [1]}] * 2})
    with pytest.raises(ConfigError, match="modalities"):
        parse_config({**base, "modalities": [{"name": "x", "shape": [1]}]})
    with pytest.raises(ConfigError, match="label_column"):
        parse_config(
            {
                **base,
                "label_column": None,
                "intershap": {"target": "label"},
                "modalities": [{"name": "x", "shape": [1]}, {"name": "y", "shape": [2]}],
            }
        )
    with pytest.raises(ConfigError, match=r"model\.factory"):
        parse_config(
            {
                **base,
                "model": {"name": "m", "factory": "not a module"},
                "modalities": [{"name": "x", "shape": [1]}, {"name": "y", "shape": [2]}],
            }
        )


def test_missing_and_malformed_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


# the smallest valid job: two modalities, measures from the test
MINIMAL = {
    "dataset": "d",
    "input": "i",
    "output": "o",
    "num_classes": 2,
    "modalities": [{"name": "x", "shape": [1]}, {"name": "y", "shape": [2]}],
}


def test_measures_and_their_needs() -> None:
    base = MINIMAL
    config = parse_config({**base, "measures": ["pid_cvx"]})
    assert config.model is None and config.model_name == "none"
    assert config.pid_cvx.n_clusters == 20 and config.pid_cvx.fit_rows == 100_000
    with pytest.raises(ConfigError, match="'intershap' needs a model"):
        parse_config(base)
    with pytest.raises(ConfigError, match="label_column or a model"):
        parse_config({**base, "measures": ["pid_cvx"], "label_column": None})
    with pytest.raises(ConfigError, match="unique"):
        parse_config({**base, "measures": ["pid_cvx", "pid_cvx"]})
    with pytest.raises(ConfigError, match=r"measures: .*unknown measure.*shapley"):
        parse_config({**base, "measures": ["shapley"]})
    for measure in ("lsmi", "pid_batch"):
        with pytest.raises(ConfigError, match=f"'{measure}' needs label_column"):
            parse_config({**base, "measures": [measure], "label_column": None})
    with pytest.raises(ConfigError, match="'encoder' needs a model"):
        parse_config({**base, "measures": ["lsmi"], "lsmi": {"features": "encoder"}})
    with pytest.raises(ConfigError, match="classifiers 'model' needs a model"):
        parse_config({**base, "measures": ["lsmi"], "lsmi": {"classifiers": "model"}})
    with pytest.raises(ConfigError, match=r"pid_cvx\.n_clusters"):
        parse_config({**base, "measures": ["pid_cvx"], "pid_cvx": {"n_clusters": 1}})


def test_fusion_measures_sections_and_their_checks() -> None:
    base = MINIMAL
    config = parse_config({**base, "measures": ["i2moe", "intense"]})
    assert config.i2moe.warmup_epochs == 5 and config.i2moe.epochs == 10
    assert config.i2moe.backbone == "mlp" and config.intense.subsets is None
    assert (config.i2moe.perturbation, config.i2moe.gate_objective) == ("swap", "expected_loss")
    subsets = [["x"], ["x", "y"]]
    config = parse_config({**base, "measures": ["intense"], "intense": {"subsets": subsets}})
    assert config.intense.subsets == subsets
    for measure in ("i2moe", "intense"):
        with pytest.raises(ConfigError, match=f"'{measure}' needs label_column"):
            parse_config({**base, "measures": [measure], "label_column": None})
    with pytest.raises(ConfigError, match=r"intense.subsets name \['z'\]"):
        parse_config({**base, "measures": ["intense"], "intense": {"subsets": [["x", "z"]]}})
    with pytest.raises(ConfigError, match="lists a subset twice"):
        parse_config(
            {**base, "intense": {"subsets": [["x", "y"], ["y", "x"]]}, "measures": ["intense"]}
        )
    with pytest.raises(ConfigError, match="give at least one subset"):
        parse_config({**base, "measures": ["intense"], "intense": {"subsets": []}})
    with pytest.raises(ConfigError, match=r"intense\.subsets: .*distinct modality names"):
        parse_config({**base, "measures": ["intense"], "intense": {"subsets": [["x", "x"]]}})
    with pytest.raises(ConfigError, match=r"warmup_epochs \(5\) must be fewer than epochs \(5\)"):
        parse_config({**base, "measures": ["i2moe"], "i2moe": {"epochs": 5}})
    with pytest.raises(ConfigError, match=r"i2moe\.backbone"):
        parse_config({**base, "measures": ["i2moe"], "i2moe": {"backbone": "cnn"}})
    with pytest.raises(ConfigError, match=r"i2moe\.perturbation"):
        parse_config({**base, "measures": ["i2moe"], "i2moe": {"perturbation": "zero"}})


def test_settings_wider_than_a_modality_fail_before_any_fitting() -> None:
    """A PCA wider than a modality used to fail after minutes of fitting other measures."""
    with pytest.raises(ConfigError, match=r"pid_cvx.pca_components = 8 exceeds .*\['x'"):
        parse_config({**MINIMAL, "measures": ["pid_cvx"], "pid_cvx": {"pca_components": 8}})
    with pytest.raises(ConfigError, match=r"lsmi.entropy.pca_components = 8 exceeds"):
        entropy = {"space": "features", "pca_components": 8}
        parse_config({**MINIMAL, "measures": ["lsmi"], "lsmi": {"entropy": entropy}})
    with pytest.raises(ConfigError, match=r"needs entropy.space: features"):
        entropy = {"pca_components": 2}
        parse_config({**MINIMAL, "measures": ["lsmi"], "lsmi": {"entropy": entropy}})


def test_a_job_is_validated_against_the_registry_it_is_given() -> None:
    """One registry: the measures a config may name and the sections it may hold are exactly
    the registered ones, passed in rather than imported behind the caller's back."""
    data = yaml.safe_load(VALID)
    with pytest.raises(ConfigError, match=r"unknown measure\(s\) \['intershap'\]"):
        validate_config(data, "job.yaml", {})
    with pytest.raises(ConfigError, match="intershap: unknown key"):
        validate_config(
            {**data, "measures": ["lsmi"], "intershap": {}}, "job.yaml", {"lsmi": MEASURES["lsmi"]}
        )
    with pytest.raises(TypeError, match="validated against the registered measures"):
        JobConfig.model_validate(data)
    assert validate_config(data, "job.yaml", MEASURES) == parse_config(data)


def test_a_measure_cannot_take_a_job_key_or_another_measures_section() -> None:
    taken = type("Taken", (LSMI,), {"name": "taken", "section": "compute"})()
    with pytest.raises(ValueError, match="config key 'compute' is taken"):
        register(taken)
    clash = type("Clash", (LSMI,), {"name": "clash"})()
    with pytest.raises(ValueError, match="config key 'lsmi' is taken"):
        register(clash)
    assert "taken" not in MEASURES and "clash" not in MEASURES
    bare = [type(name, (Measure,), {"name": name})() for name in ("bare_one", "bare_two")]
    try:
        for measure in bare:  # no settings, no key: any number of them
            register(measure)
    finally:
        for measure in bare:
            unregister(measure.name)


def test_the_former_pid_section_is_still_read_with_a_warning() -> None:
    data = {**yaml.safe_load(VALID), "measures": ["pid_cvx"], "pid": {"n_clusters": 7}}
    with pytest.warns(DeprecationWarning, match="'pid' is now 'pid_cvx'"):
        config = parse_config(data)
    assert config.pid_cvx.n_clusters == 7
