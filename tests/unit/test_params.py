"""parse_config: user parameters -> frozen config dataclasses, checking names, types and ranges."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

import pytest

from core.config import KINDS, NoopConfig, TrainConfig
from core.params import ConfigError, config_to_params, parse_config, require


@dataclass(frozen=True)
class Needy:
    """A config with a required field, a list with a default factory, and no validate()."""

    n: int
    name: str = "x"
    rate: float | None = None
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Checked:
    low: int = 0
    high: int = 10

    def validate(self) -> None:
        require(self.low <= self.high, "low", f"must be <= high ({self.high}), got {self.low}")


def config_error(cls: type, params: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(cls, params)
    e = info.value
    assert str(e) == f"{e.field}: {e.message}"
    assert isinstance(e, ValueError)
    return e


# ----------------------------------------------------------------------------------------------------
# names


def test_empty_and_none_give_the_defaults() -> None:
    assert parse_config(TrainConfig, {}) == TrainConfig()
    assert parse_config(TrainConfig, None) == TrainConfig()
    assert parse_config(NoopConfig, {}) == NoopConfig()


def test_unknown_param() -> None:
    e = config_error(TrainConfig, {"zdim": 8})
    assert e.field == "zdim"
    expected = ", ".join(sorted(TrainConfig.__dataclass_fields__))
    assert e.message == "unknown parameter; expected one of: " + expected


def test_first_unknown_param_in_sorted_order() -> None:
    e = config_error(NoopConfig, {"zz": 1, "seconds": 1.0, "aa": 2})
    assert e.field == "aa"
    assert e.message == "unknown parameter; expected one of: fail, seconds, value"


def test_missing_required_param() -> None:
    e = config_error(Needy, {"name": "y"})
    assert (e.field, e.message) == ("n", "required parameter is missing")
    assert parse_config(Needy, {"n": 3}) == Needy(n=3)


def test_default_factory_is_not_required() -> None:
    config = parse_config(Needy, {"n": 1})
    assert config.tags == ()


def test_params_are_not_mutated() -> None:
    params = {"filters": [8, 16, 32], "learning_rate": 1}
    parse_config(TrainConfig, params)
    assert params == {"filters": [8, 16, 32], "learning_rate": 1}


def test_result_is_frozen() -> None:
    config = parse_config(TrainConfig, {"epochs": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------------
# types


def test_int_accepted_for_float() -> None:
    config = parse_config(TrainConfig, {"learning_rate": 1, "validation_split": 0})
    assert config.learning_rate == 1.0 and type(config.learning_rate) is float
    assert config.validation_split == 0.0 and type(config.validation_split) is float


def test_float_accepted_for_float() -> None:
    assert parse_config(TrainConfig, {"learning_rate": 0.5}).learning_rate == 0.5


@pytest.mark.parametrize("param,value,message", [
    ("epochs", True, "expected int, got True"),
    ("epochs", False, "expected int, got False"),
    ("z_dim", 8.0, "expected int, got 8.0"),
    ("z_dim", "8", "expected int, got '8'"),
    ("seed", None, "expected int, got None"),
    ("learning_rate", True, "expected float, got True"),
    ("learning_rate", "0.1", "expected float, got '0.1'"),
    ("dataset", 1, "expected str, got 1"),
    ("limit", True, "expected int | null, got True"),
    ("limit", 2.5, "expected int | null, got 2.5"),
    ("data_path", 3, "expected str | null, got 3"),
])
def test_wrong_types(param: str, value: object, message: str) -> None:
    e = config_error(TrainConfig, {param: value})
    assert (e.field, e.message) == (param, message)


@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_bool_rejects_non_bools(value: object) -> None:
    e = config_error(NoopConfig, {"fail": value})
    assert (e.field, e.message) == ("fail", f"expected bool, got {value!r}")


def test_bool_accepted() -> None:
    assert parse_config(NoopConfig, {"fail": True}).fail is True


def test_list_becomes_tuple() -> None:
    config = parse_config(TrainConfig, {"filters": [8, 16, 32]})
    assert config.filters == (8, 16, 32)
    assert isinstance(config.filters, tuple)
    assert parse_config(TrainConfig, {"filters": (4, 4, 4)}).filters == (4, 4, 4)


@pytest.mark.parametrize("value,field,message", [
    ("8,16,32", "filters", "expected list of int, got '8,16,32'"),
    (32, "filters", "expected list of int, got 32"),
    ([8, "16", 32], "filters[1]", "expected int, got '16'"),
    ([8, 16, True], "filters[2]", "expected int, got True"),
    ([8.0, 16, 32], "filters[0]", "expected int, got 8.0"),
])
def test_list_items_checked(value: object, field: str, message: str) -> None:
    e = config_error(TrainConfig, {"filters": value})
    assert (e.field, e.message) == (field, message)


def test_tuple_of_str() -> None:
    assert parse_config(Needy, {"n": 1, "tags": ["a", "b"]}).tags == ("a", "b")
    e = config_error(Needy, {"n": 1, "tags": ["a", 2]})
    assert (e.field, e.message) == ("tags[1]", "expected str, got 2")


@pytest.mark.parametrize("param,value", [("loss", "mse"), ("loss", "bce"), ("optimizer", "rmsprop"),
                                         ("model", "conv_ae")])
def test_literal_accepted(param: str, value: str) -> None:
    assert getattr(parse_config(TrainConfig, {param: value}), param) == value


@pytest.mark.parametrize("param,value,message", [
    ("loss", "l2", "expected one of 'bce' | 'mse', got 'l2'"),
    ("loss", "BCE", "expected one of 'bce' | 'mse', got 'BCE'"),
    ("loss", None, "expected one of 'bce' | 'mse', got None"),
    ("loss", ["bce"], "expected one of 'bce' | 'mse', got ['bce']"),
    ("optimizer", "adamw", "expected one of 'adam' | 'adadelta' | 'rmsprop' | 'sgd', got 'adamw'"),
    ("model", "vae", "expected one of 'conv_ae', got 'vae'"),
])
def test_literal_rejected(param: str, value: object, message: str) -> None:
    e = config_error(TrainConfig, {param: value})
    assert (e.field, e.message) == (param, message)


def test_literal_rejects_bool_equal_to_a_member() -> None:
    @dataclass(frozen=True)
    class Level:
        level: Literal[0, 1] = 0

    assert parse_config(Level, {"level": 1}).level == 1
    e = config_error(Level, {"level": True})
    assert (e.field, e.message) == ("level", "expected one of 0 | 1, got True")


def test_optional_none() -> None:
    config = parse_config(TrainConfig, {"limit": None, "data_path": None})
    assert config.limit is None and config.data_path is None
    config = parse_config(TrainConfig, {"limit": 5, "data_path": "/x.npz"})
    assert (config.limit, config.data_path) == (5, "/x.npz")
    needy = parse_config(Needy, {"n": 1, "rate": 2})
    assert needy.rate == 2.0 and type(needy.rate) is float
    assert parse_config(Needy, {"n": 1, "rate": None}).rate is None


# ----------------------------------------------------------------------------------------------------
# validate()


@pytest.mark.parametrize("param,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'; expected one of: digits, mnist"),
    ("epochs", 0, "must be >= 1, got 0"),
    ("epochs", -3, "must be >= 1, got -3"),
    ("batch_size", 0, "must be >= 1, got 0"),
    ("z_dim", 0, "must be >= 1, got 0"),
    ("filters", [8, 16], "must be three positive integers, got [8, 16]"),
    ("filters", [8, 16, 32, 64], "must be three positive integers, got [8, 16, 32, 64]"),
    ("filters", [8, 0, 32], "must be three positive integers, got [8, 0, 32]"),
    ("learning_rate", 0, "must be > 0, got 0.0"),
    ("learning_rate", -0.1, "must be > 0, got -0.1"),
    ("validation_split", 1, "must be in [0, 1), got 1.0"),
    ("validation_split", -0.1, "must be in [0, 1), got -0.1"),
    ("limit", 1, "must be >= 2, got 1"),
])
def test_train_validate_ranges(param: str, value: object, message: str) -> None:
    e = config_error(TrainConfig, {param: value})
    assert (e.field, e.message) == (param, message)


@pytest.mark.parametrize("params", [{"epochs": 1}, {"batch_size": 1}, {"z_dim": 1}, {"filters": [1, 1, 1]},
                                    {"validation_split": 0}, {"validation_split": 0.99}, {"limit": 2},
                                    {"dataset": "mnist"}, {"learning_rate": 1e-9}])
def test_train_validate_bounds_accepted(params: dict) -> None:
    config = parse_config(TrainConfig, params)
    (key, value), = params.items()
    assert config_to_params(config)[key] == value


def test_noop_validate() -> None:
    e = config_error(NoopConfig, {"seconds": -1})
    assert (e.field, e.message) == ("seconds", "must be >= 0, got -1.0")
    assert parse_config(NoopConfig, {"seconds": 0}).seconds == 0.0


def test_custom_validate_is_called() -> None:
    assert parse_config(Checked, {"low": 3, "high": 3}) == Checked(3, 3)
    e = config_error(Checked, {"low": 4, "high": 3})
    assert (e.field, e.message) == ("low", "must be <= high (3), got 4")


def test_type_errors_come_before_validate() -> None:
    e = config_error(TrainConfig, {"epochs": 0, "z_dim": "x"})
    assert e.field == "z_dim"


def test_require() -> None:
    require(True, "f", "never")
    with pytest.raises(ConfigError) as info:
        require(False, "f", "bad")
    assert (info.value.field, info.value.message, str(info.value)) == ("f", "bad", "f: bad")


# ----------------------------------------------------------------------------------------------------
# config_to_params


def test_config_to_params_has_every_field_json_ready() -> None:
    params = config_to_params(TrainConfig())
    assert list(params) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert params["filters"] == [32, 64, 128] and isinstance(params["filters"], list)
    assert params["data_path"] is None and params["limit"] is None
    assert json.loads(json.dumps(params)) == params


@pytest.mark.parametrize("config", [
    TrainConfig(),
    TrainConfig(dataset="mnist", data_path="/d/mnist.npz", limit=100, epochs=2, batch_size=32, z_dim=8,
                filters=(16, 32, 64), loss="mse", optimizer="adadelta", learning_rate=1.0,
                validation_split=0.0, seed=7),
    NoopConfig(),
    NoopConfig(seconds=0.5, fail=True, value=3.0),
    Needy(n=4, name="q", rate=0.5, tags=("a", "b"), mode="b"),
], ids=["train-default", "train-custom", "noop-default", "noop-custom", "needy"])
def test_config_to_params_round_trips(config: object) -> None:
    params = config_to_params(config)
    again = parse_config(type(config), params)
    assert again == config
    assert config_to_params(again) == params
    assert parse_config(type(config), json.loads(json.dumps(params))) == config


def test_every_kind_parses_its_own_defaults() -> None:
    for kind, info in KINDS.items():
        default = info.config()
        assert parse_config(info.config, config_to_params(default)) == default, kind
