"""parse_config: user parameters -> frozen config dataclasses, checking names, types and ranges."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

import pytest

from core.data_files import DATASETS, IMAGE_DATASETS
from core.errors import ConfigError
from core.kinds import KINDS, SPEC_KINDS
from core.kinds.cluster import ClusterParams
from core.kinds.dream import MAX_DREAM_JOBS, DreamMergeParams, DreamParams, DreamTileParams
from core.kinds.encode import EncodeParams
from core.kinds.noop import NoopParams
from core.kinds.sample import SampleParams
from core.kinds.search import SearchParams
from core.kinds.train import TrainParams
from core.models.defaults import cnn_feature_maps
from core.params import config_to_params, parse_config, require


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
    assert parse_config(TrainParams, {}) == TrainParams()
    assert parse_config(TrainParams, None) == TrainParams()
    assert parse_config(NoopParams, {}) == NoopParams()


def test_unknown_param() -> None:
    e = config_error(TrainParams, {"zdim": 8})
    assert e.field == "zdim"
    expected = ", ".join(sorted(TrainParams.__dataclass_fields__))
    assert e.message == "unknown parameter; expected one of: " + expected


def test_first_unknown_param_in_sorted_order() -> None:
    e = config_error(NoopParams, {"zz": 1, "seconds": 1.0, "aa": 2})
    assert e.field == "aa"
    assert e.message == ("unknown parameter; expected one of: allocate_mb, fail, seconds, stuck, transient_failures, "
                         "value")


def test_missing_required_param() -> None:
    e = config_error(Needy, {"name": "y"})
    assert (e.field, e.message) == ("n", "required parameter is missing")
    assert parse_config(Needy, {"n": 3}) == Needy(n=3)


def test_default_factory_is_not_required() -> None:
    config = parse_config(Needy, {"n": 1})
    assert config.tags == ()


def test_params_are_not_mutated() -> None:
    params = {"filters": [8, 16, 32], "learning_rate": 1}
    parse_config(TrainParams, params)
    assert params == {"filters": [8, 16, 32], "learning_rate": 1}


def test_result_is_frozen() -> None:
    config = parse_config(TrainParams, {"epochs": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------------
# types


def test_int_accepted_for_float() -> None:
    config = parse_config(TrainParams, {"learning_rate": 1, "validation_split": 0})
    assert config.learning_rate == 1.0 and type(config.learning_rate) is float
    assert config.validation_split == 0.0 and type(config.validation_split) is float


def test_float_accepted_for_float() -> None:
    assert parse_config(TrainParams, {"learning_rate": 0.5}).learning_rate == 0.5


@pytest.mark.parametrize("param,value,message", [
    ("epochs", True, "expected int, got True"),
    ("epochs", False, "expected int, got False"),
    ("z_dim", 8.0, "expected int, got 8.0"),
    ("z_dim", "8", "expected int, got '8'"),
    ("seed", None, "expected int, got None"),
    ("learning_rate", True, "expected float, got True"),
    ("learning_rate", "0.1", "expected float, got '0.1'"),
    ("dataset", 1, "expected str, got 1"),
    # Optional[X] given a value: X's own error, not "X | null"
    ("limit", True, "expected int, got True"),
    ("limit", 2.5, "expected int, got 2.5"),
    ("limit", "5", "expected int, got '5'"),
    ("data_path", 3, "expected str, got 3"),
    ("z_dim", "8", "expected int, got '8'"),
    ("learning_rate", "fast", "expected float, got 'fast'"),
    ("image_size", 64.0, "expected int, got 64.0"),
])
def test_wrong_types(param: str, value: object, message: str) -> None:
    e = config_error(TrainParams, {param: value})
    assert (e.field, e.message) == (param, message)


def test_union_of_several_types_names_them_all() -> None:
    @dataclass(frozen=True)
    class Either:
        x: int | str | None = None

    assert parse_config(Either, {"x": 3}).x == 3
    assert parse_config(Either, {"x": "a"}).x == "a"
    assert parse_config(Either, {"x": None}).x is None
    e = config_error(Either, {"x": 2.5})
    assert (e.field, e.message) == ("x", "expected int | str | null, got 2.5")


def test_optional_list_item_error_names_the_item() -> None:
    # filters is Optional[tuple[int, ...]]: a bad item is reported as the item, not as "list | null"
    e = config_error(TrainParams, {"filters": [8, "16", 32]})
    assert (e.field, e.message) == ("filters[1]", "expected int, got '16'")


@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_bool_rejects_non_bools(value: object) -> None:
    e = config_error(NoopParams, {"fail": value})
    assert (e.field, e.message) == ("fail", f"expected bool, got {value!r}")


def test_bool_accepted() -> None:
    assert parse_config(NoopParams, {"fail": True}).fail is True


def test_list_becomes_tuple() -> None:
    config = parse_config(TrainParams, {"filters": [8, 16, 32]})
    assert config.filters == (8, 16, 32)
    assert isinstance(config.filters, tuple)
    assert parse_config(TrainParams, {"filters": (4, 4, 4)}).filters == (4, 4, 4)


@pytest.mark.parametrize("value,field,message", [
    # a scalar is a list of one, so a string is checked as one item
    ("8,16,32", "filters", "expected int, got '8,16,32'"),
    ([8, "16", 32], "filters[1]", "expected int, got '16'"),
    ([8, 16, True], "filters[2]", "expected int, got True"),
    ([8.0, 16, 32], "filters[0]", "expected int, got 8.0"),
])
def test_list_items_checked(value: object, field: str, message: str) -> None:
    e = config_error(TrainParams, {"filters": value})
    assert (e.field, e.message) == (field, message)


@pytest.mark.parametrize("cls,params,attr,expected", [
    (ClusterParams, {"k": 10}, "k", (10,)),
    (ClusterParams, {"k": [10]}, "k", (10,)),
    (ClusterParams, {"k": [2, 3, 4]}, "k", (2, 3, 4)),
    (TrainParams, {"model": "face_ae", "filters": 32}, "filters", (32,)),
    (Needy, {"n": 1, "tags": "a"}, "tags", ("a",)),
], ids=["k-scalar", "k-list-of-one", "k-list", "filters-scalar", "tags-scalar"])
def test_scalar_is_a_list_of_one(cls: type, params: dict, attr: str, expected: tuple) -> None:
    config = parse_config(cls, params)
    assert getattr(config, attr) == expected
    assert config_to_params(config)[attr] == list(expected)


def test_scalar_filters_for_conv_ae_refused_by_the_three_filters_rule() -> None:
    # filters: 32 is (32,), which conv_ae refuses: the message is about the count, not the type
    e = config_error(TrainParams, {"filters": 32})
    assert (e.field, e.message) == ("filters", "conv_ae takes three filter counts")


@pytest.mark.parametrize("value,field,message", [
    (None, "k", "expected int, got None"),
    ("10", "k", "expected int, got '10'"),
    (True, "k", "expected int, got True"),
    ([2, "x"], "k[1]", "expected int, got 'x'"),
])
def test_cluster_k_types(value: object, field: str, message: str) -> None:
    e = config_error(ClusterParams, {"k": value})
    assert (e.field, e.message) == (field, message)


def test_tuple_of_str() -> None:
    assert parse_config(Needy, {"n": 1, "tags": ["a", "b"]}).tags == ("a", "b")
    e = config_error(Needy, {"n": 1, "tags": ["a", 2]})
    assert (e.field, e.message) == ("tags[1]", "expected str, got 2")


@pytest.mark.parametrize("param,value", [("loss", "mse"), ("loss", "bce"), ("optimizer", "rmsprop"),
                                         ("model", "conv_ae"), ("model", "pool_ae"), ("model", "face_ae"),
                                         ("model", "cnn"), ("color", "rgb")])
def test_literal_accepted(param: str, value: str) -> None:
    assert getattr(parse_config(TrainParams, {param: value}), param) == value


@pytest.mark.parametrize("param,value,message", [
    ("loss", "l2", "expected one of 'bce' | 'mse', got 'l2'"),
    ("loss", "BCE", "expected one of 'bce' | 'mse', got 'BCE'"),
    ("loss", None, "expected one of 'bce' | 'mse', got None"),
    ("loss", ["bce"], "expected one of 'bce' | 'mse', got ['bce']"),
    ("optimizer", "adamw", "expected one of 'adam' | 'adadelta' | 'rmsprop' | 'sgd', got 'adamw'"),
    ("model", "vae", "expected one of 'conv_ae' | 'pool_ae' | 'face_ae' | 'cnn', got 'vae'"),
    ("color", "RGB", "expected one of 'grey' | 'rgb', got 'RGB'"),
])
def test_literal_rejected(param: str, value: object, message: str) -> None:
    e = config_error(TrainParams, {param: value})
    assert (e.field, e.message) == (param, message)


def test_literal_rejects_bool_equal_to_a_member() -> None:
    @dataclass(frozen=True)
    class Level:
        level: Literal[0, 1] = 0

    assert parse_config(Level, {"level": 1}).level == 1
    e = config_error(Level, {"level": True})
    assert (e.field, e.message) == ("level", "expected one of 0 | 1, got True")


def test_optional_none() -> None:
    config = parse_config(TrainParams, {"limit": None, "data_path": None})
    assert config.limit is None and config.data_path is None
    config = parse_config(TrainParams, {"limit": 5, "data_path": "/x.npz"})
    assert (config.limit, config.data_path) == (5, "/x.npz")
    needy = parse_config(Needy, {"n": 1, "rate": 2})
    assert needy.rate == 2.0 and type(needy.rate) is float
    assert parse_config(Needy, {"n": 1, "rate": None}).rate is None


# ----------------------------------------------------------------------------------------------------
# validate()


@pytest.mark.parametrize("param,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'; expected one of: digits, mnist, olivetti, npz, images, wifi"),
    ("dataset", None, "required"),
    ("dataset", "wifi", "model conv_ae needs an image dataset, not 'wifi'"),
    ("epochs", 0, "must be >= 1, got 0"),
    ("epochs", -3, "must be >= 1, got -3"),
    ("batch_size", 0, "must be >= 1, got 0"),
    ("z_dim", 0, "must be >= 1, got 0"),
    ("filters", [8, 16], "conv_ae takes three filter counts"),
    ("filters", [8, 16, 32, 64], "conv_ae takes three filter counts"),
    ("filters", [], "must be positive integers, got []"),
    ("learning_rate", 0, "must be > 0, got 0.0"),
    ("learning_rate", -0.1, "must be > 0, got -0.1"),
    ("validation_split", 1, "must be in [0, 1), got 1.0"),
    ("validation_split", -0.1, "must be in [0, 1), got -0.1"),
    ("limit", 1, "must be >= 2, got 1"),
    ("image_size", 7, "must be from 8 to 1024, got 7"),
    ("image_size", 1025, "must be from 8 to 1024, got 1025"),
    ("test_size", 0, "must be in (0, 1), got 0.0"),
    ("test_size", 1, "must be in (0, 1), got 1.0"),
])
def test_train_validate_ranges(param: str, value: object, message: str) -> None:
    e = config_error(TrainParams, {param: value})
    assert (e.field, e.message) == (param, message)


@pytest.mark.parametrize("model", ["conv_ae", "pool_ae", "face_ae", "cnn"])
def test_train_on_wifi_is_refused_for_every_model(model: str) -> None:
    e = config_error(TrainParams, {"model": model, "dataset": "wifi"})
    assert (e.field, e.message) == ("dataset", f"model {model} needs an image dataset, not 'wifi'")


@pytest.mark.parametrize("model,filters", [("conv_ae", [8, 0, 32]), ("pool_ae", [8, 0]), ("cnn", [-1])])
def test_filters_must_be_positive(model: str, filters: list) -> None:
    e = config_error(TrainParams, {"model": model, "filters": filters})
    assert e.field == "filters"
    assert e.message.startswith("must be positive integers, got ")


def test_filters_error_shows_the_list_the_user_wrote() -> None:
    e = config_error(TrainParams, {"filters": [8, 0, 32]})
    assert (e.field, e.message) == ("filters", "must be positive integers, got [8, 0, 32]")


@pytest.mark.parametrize("model,filters", [("pool_ae", [8, 4]), ("face_ae", [8]), ("face_ae", [16, 32]),
                                           ("cnn", [32, 64]), ("conv_ae", [1, 1, 1])])
def test_filter_counts_other_than_three_for_other_models(model: str, filters: list) -> None:
    assert parse_config(TrainParams, {"model": model, "filters": filters}).filters == tuple(filters)


@pytest.mark.parametrize("model,filters", [("pool_ae", [8]), ("pool_ae", [8, 16, 32]), ("cnn", [64])])
def test_pool_ae_and_cnn_take_two_filter_counts(model: str, filters: list) -> None:
    e = config_error(TrainParams, {"model": model, "filters": filters})
    assert (e.field, e.message) == ("filters", f"{model} takes two filter counts")


def test_face_ae_image_size_must_divide_by_its_strides() -> None:
    assert parse_config(TrainParams, {"model": "face_ae", "image_size": 96}).image_size == 96
    e = config_error(TrainParams, {"model": "face_ae", "image_size": 100})
    assert (e.field, e.message) == ("image_size", "face_ae with 4 stride-2 layers needs a multiple of 16, got 100")


def test_train_none_means_the_models_default() -> None:
    config = TrainParams()  # the model's defaults are filled in: the stored params say what was used
    assert (config.z_dim, config.filters, config.learning_rate) == (16, (32, 64, 128), 1e-3)
    assert TrainParams(model="face_ae").filters == (32, 64, 128, 256)
    assert TrainParams(model="pool_ae").filters is None and TrainParams(model="cnn").filters is None
    assert TrainParams(model="face_ae").z_dim == 256
    assert TrainParams(model="pool_ae").z_dim is None
    assert TrainParams(model="cnn").z_dim is None
    assert TrainParams(model="pool_ae", z_dim=8).z_dim == 8
    assert TrainParams(learning_rate=0.5).learning_rate == 0.5
    assert parse_config(TrainParams, {"z_dim": None, "filters": None, "learning_rate": None}) == config


@pytest.mark.parametrize("dataset", IMAGE_DATASETS)
def test_train_accepts_every_image_dataset(dataset: str) -> None:
    params = {"dataset": dataset, "data_path": "/x"} if dataset in ("npz", "images") else {"dataset": dataset}
    assert parse_config(TrainParams, params).dataset == dataset


def test_dataset_lists() -> None:
    assert IMAGE_DATASETS == ("digits", "mnist", "olivetti", "npz", "images")
    assert DATASETS == IMAGE_DATASETS + ("wifi",)


# ----------------------------------------------------------------------------------------------------
# encode, sample, cluster: validate()


@pytest.mark.parametrize("cls,param,value,message", [
    (EncodeParams, "dataset", "wifi", "encode needs an image dataset, not 'wifi'"),
    (EncodeParams, "dataset", "cifar10",
     "unknown dataset 'cifar10'; expected one of: digits, mnist, olivetti, npz, images, wifi"),
    (EncodeParams, "batch_size", 0, "must be >= 1, got 0"),
    (SampleParams, "n", 1, "must be >= 2, got 1"),
    (SampleParams, "k_sigma", 0, "must be > 0, got 0.0"),
    (SampleParams, "steps", 1, "must be >= 2, got 1"),
    (SampleParams, "grid", 0, "must be from 1 to 400, got 0"),
    (SampleParams, "grid", 401, "must be from 1 to 400, got 401"),
    (SampleParams, "sampler", "gauss",
     "expected one of 'uniform_box' | 'normal' | 'fitted_normal' | 'pca_ellipsoid' | 'interpolate', got 'gauss'"),
    (ClusterParams, "pca", 0, "must be >= 1, got 0"),
    (ClusterParams, "k", 1, "must be integers from 2 to 10000, got [1]"),
    (ClusterParams, "k", [], "must be integers from 2 to 10000, got []"),
    (ClusterParams, "k", [2, 10001], "must be integers from 2 to 10000, got [2, 10001]"),
    (ClusterParams, "k", [3, 4, 3], "repeats a value: [3, 4, 3]"),
    (ClusterParams, "n_init", 0, "must be >= 1, got 0"),
    (ClusterParams, "silhouette_sample", 9, "must be >= 10, got 9"),
    (ClusterParams, "plot_sample", 9, "must be >= 10, got 9"),
    (ClusterParams, "plot", "umap", "expected one of 'pca' | 'tsne' | 'none', got 'umap'"),
    (ClusterParams, "algorithm", "dbscan", "expected one of 'kmeans' | 'minibatch', got 'dbscan'"),
])
def test_new_kinds_validate(cls: type, param: str, value: object, message: str) -> None:
    e = config_error(cls, {param: value})
    assert (e.field, e.message) == (param, message)


@pytest.mark.parametrize("cls,params,field,message", [
    (ClusterParams, {"dataset": "wifi", "limit": 1}, "limit", "must be >= 2, got 1"),
    (ClusterParams, {"dataset": "wifi", "test_size": 1}, "test_size", "must be in (0, 1), got 1.0"),
    (TrainParams, {"dataset": "npz"}, "data_path", "required for dataset 'npz'"),
    (TrainParams, {"dataset": "images"}, "data_path", "required for dataset 'images'"),
    (ClusterParams, {"dataset": "npz"}, "data_path", "required for dataset 'npz'"),
    (EncodeParams, {"dataset": "images"}, "data_path", "required for dataset 'images'"),
    (EncodeParams, {"dataset": "mnist", "image_size": 4}, "image_size", "must be from 8 to 1024, got 4"),
])
def test_data_params_checked_when_a_dataset_is_set(cls: type, params: dict, field: str, message: str) -> None:
    e = config_error(cls, params)
    assert (e.field, e.message) == (field, message)


@pytest.mark.parametrize("cls", [EncodeParams, ClusterParams])
@pytest.mark.parametrize("param,value", [("limit", 1), ("test_size", 7), ("image_size", 3)])
def test_data_params_checked_without_a_dataset(cls: type, param: str, value: object) -> None:
    e = config_error(cls, {param: value})
    assert e.field == param


def test_new_kinds_defaults() -> None:
    assert EncodeParams().dataset is None  # the autoencoder's own dataset
    assert ClusterParams().dataset is None  # latents of an encode job
    assert ClusterParams().k == (10,)
    assert TrainParams().dataset == "digits"
    assert parse_config(ClusterParams, {"dataset": "wifi", "k": [2, 3, 4]}).k == (2, 3, 4)
    assert parse_config(EncodeParams, {}).dataset is None


@pytest.mark.parametrize("params", [{"epochs": 1}, {"batch_size": 1}, {"z_dim": 1}, {"filters": [1, 1, 1]},
                                    {"validation_split": 0}, {"validation_split": 0.99}, {"limit": 2},
                                    {"dataset": "mnist"}, {"learning_rate": 1e-9}])
def test_train_validate_bounds_accepted(params: dict) -> None:
    config = parse_config(TrainParams, params)
    (key, value), = params.items()
    assert config_to_params(config)[key] == value


def test_noop_validate() -> None:
    e = config_error(NoopParams, {"seconds": -1})
    assert (e.field, e.message) == ("seconds", "must be >= 0, got -1.0")
    assert parse_config(NoopParams, {"seconds": 0}).seconds == 0.0


def test_custom_validate_is_called() -> None:
    assert parse_config(Checked, {"low": 3, "high": 3}) == Checked(3, 3)
    e = config_error(Checked, {"low": 4, "high": 3})
    assert (e.field, e.message) == ("low", "must be <= high (3), got 4")


def test_type_errors_come_before_validate() -> None:
    e = config_error(TrainParams, {"epochs": 0, "z_dim": "x"})
    assert e.field == "z_dim"


def test_require() -> None:
    require(True, "f", "never")
    with pytest.raises(ConfigError) as info:
        require(False, "f", "bad")
    assert (info.value.field, info.value.message, str(info.value)) == ("f", "bad", "f: bad")


# ----------------------------------------------------------------------------------------------------
# config_to_params


def test_config_to_params_has_every_field_json_ready() -> None:
    params = config_to_params(TrainParams())
    assert list(params) == [f.name for f in dataclasses.fields(TrainParams)]
    assert params["filters"] == [32, 64, 128]  # conv_ae's default, filled in
    assert (params["z_dim"], params["learning_rate"]) == (16, 1e-3)
    assert params["data_path"] is None and params["limit"] is None and params["image_size"] is None
    assert (params["dataset"], params["color"], params["test_size"]) == ("digits", "grey", 0.2)
    assert json.loads(json.dumps(params)) == params
    filters = config_to_params(TrainParams(filters=(32, 64, 128)))["filters"]
    assert filters == [32, 64, 128] and isinstance(filters, list)
    for cls in (EncodeParams, SampleParams, ClusterParams):
        params = config_to_params(cls())
        assert list(params) == [f.name for f in dataclasses.fields(cls)]
        assert json.loads(json.dumps(params)) == params
    assert config_to_params(ClusterParams())["k"] == [10]


@pytest.mark.parametrize("config", [
    TrainParams(),
    TrainParams(dataset="mnist", data_path="/d/mnist.npz", limit=100, image_size=32, color="rgb", test_size=0.3,
                model="conv_ae", epochs=2, batch_size=32, z_dim=8, filters=(16, 32, 64), loss="mse",
                optimizer="adadelta", learning_rate=1.0, validation_split=0.0, seed=7),
    TrainParams(dataset="olivetti", model="face_ae", filters=(16,), image_size=64),
    TrainParams(dataset="images", data_path="/d/faces", model="cnn", color="rgb"),
    EncodeParams(),
    EncodeParams(dataset="npz", data_path="/d/x.npz", limit=10, image_size=28, color="rgb", test_size=0.5,
                 batch_size=7),
    SampleParams(),
    SampleParams(sampler="pca_ellipsoid", n=10, k_sigma=1.5, steps=3, grid=4, seed=2),
    ClusterParams(),
    ClusterParams(dataset="wifi", data_path="/d/w.txt", limit=50, test_size=0.25, pca=2, k=(2, 3, 4),
                  algorithm="minibatch", n_init=3, silhouette_sample=100, plot="tsne", plot_sample=50, seed=1),
    NoopParams(),
    NoopParams(seconds=0.5, fail=True, value=3.0),
    Needy(n=4, name="q", rate=0.5, tags=("a", "b"), mode="b"),
    DreamParams(image="/d/in.jpg"),
    DreamParams(image="/d/in.jpg", levels=1, iterations=2, size=112, maps={0: 56, 1: [12, 56, 3, 40]},
                epochs={0: 5, 1: 7}, epsilon={0: 0.1, 1: 0.02}, threshold=0.01, clip=0.9),
    DreamTileParams(),
    DreamTileParams(size=224, iteration=1, level=2, tile=15, map=7, epochs=3, epsilon=0.5, threshold=0.1),
    DreamTileParams(image="/d/in.jpg"),
    DreamMergeParams(),
    DreamMergeParams(size=224, iteration=2, level=1, last_level=False, final=False, clip=0.5),
], ids=["train-default", "train-custom", "train-face_ae", "train-cnn", "encode-default", "encode-custom",
        "sample-default", "sample-custom", "cluster-default", "cluster-custom", "noop-default", "noop-custom",
        "needy", "dream-default", "dream-per-level", "dream_tile-default", "dream_tile-custom", "dream_tile-first",
        "dream_merge-default", "dream_merge-custom"])
def test_config_to_params_round_trips(config: object) -> None:
    params = config_to_params(config)
    again = parse_config(type(config), params)
    assert again == config
    assert config_to_params(again) == params
    assert parse_config(type(config), json.loads(json.dumps(params))) == config


def test_kinds() -> None:
    assert sorted(KINDS) == ["cluster", "dream", "dream_merge", "dream_tile", "encode", "noop", "sample", "sleep",
                             "study", "train"]
    assert {k: (i.params, i.queue) for k, i in KINDS.items()} == {
        "noop": (NoopParams, "cpu"), "sleep": (NoopParams, "cpu"), "train": (TrainParams, "gpu"),
        "encode": (EncodeParams, "gpu"), "sample": (SampleParams, "gpu"), "cluster": (ClusterParams, "cpu"),
        "dream": (DreamParams, "gpu"), "dream_tile": (DreamTileParams, "gpu"), "dream_merge": (DreamMergeParams, "gpu"),
        "study": (SearchParams, "cpu")}


def test_kind_flags() -> None:
    # a spec may name every kind but the ones a dream entry generates; only the dream entry expands
    assert SPEC_KINDS == ("cluster", "dream", "encode", "noop", "sample", "sleep", "train")
    assert {k for k, i in KINDS.items() if i.expand is not None} == {"dream"}
    assert {k: i.made_by for k, i in KINDS.items() if i.made_by} == {
        "dream_tile": "dream", "dream_merge": "dream", "study": "train"}
    assert {k: i.files for k, i in KINDS.items() if i.files} == {"dream": ("image",), "dream_tile": ("image",)}
    for kind, info in KINDS.items():
        assert info.name == kind
        assert not (info.expand and info.made_by), kind
        assert (info.handler is None) == (info.expand is not None), kind  # a job runs a handler; an entry expands
        fields = set(info.params.__dataclass_fields__)
        assert set(info.files) <= fields, kind
    # the dream and its tiles read one cnn; the merges read only their tiles (plain parents)
    for kind in ("dream", "dream_tile"):
        (inp,) = KINDS[kind].inputs
        assert (inp.kind, inp.models, inp.min, inp.max) == ("train", ("cnn",), 1, 1)
    assert KINDS["dream_merge"].inputs == ()


# A valid value for each required parameter (a kind whose defaults alone do not validate).
REQUIRED: dict[str, dict[str, object]] = {
    "dream": {"image": "/d/in.jpg"},
    "study": {"space": {"z_dim": {"int": [2, 8]}}, "metric": "val_loss", "trials": 4},
}


def test_every_kind_parses_its_own_defaults() -> None:
    for kind, info in KINDS.items():
        default = info.params(**REQUIRED.get(kind, {}))
        assert parse_config(info.params, config_to_params(default)) == default, kind


def test_only_the_dream_and_the_study_need_more_than_their_defaults() -> None:
    # DreamParams() has no image, SearchParams() no space: neither can be parsed from its defaults alone
    e = config_error(DreamParams, {})
    assert (e.field, e.message) == ("image", "required: the path of a jpg or png file")
    assert config_error(SearchParams, {}).field == "space"
    for kind, info in KINDS.items():
        if kind not in REQUIRED:
            parse_config(info.params, {})


# ----------------------------------------------------------------------------------------------------
# dream, dream_tile, dream_merge


def dream(**params: object) -> DreamParams:
    return parse_config(DreamParams, {"image": "in.jpg", **params})


def dream_error(**params: object) -> ConfigError:
    return config_error(DreamParams, {"image": "in.jpg", **params})


def test_dream_defaults() -> None:
    d = dream()
    assert (d.levels, d.iterations, d.size, d.maps, d.epochs, d.epsilon) == (2, 4, 560, 0, 20, 0.05)
    assert d.job_count == 4 * (1 + 1 + 4 + 1 + 16 + 1)
    assert type(d.epsilon) is float


@pytest.mark.parametrize("levels,size", [(0, 140), (1, 280), (2, 560), (3, 1120), (5, 4480)])
def test_dream_default_size(levels: int, size: int) -> None:
    assert dream(levels=levels).size == size == 28 * 2 ** levels * 5
    assert dream(levels=levels, size=None).size == size


@pytest.mark.parametrize("levels,iterations,jobs", [(0, 1, 2), (0, 3, 6), (1, 1, 7), (2, 2, 48), (5, 1, 1371)])
def test_dream_job_count(levels: int, iterations: int, jobs: int) -> None:
    assert dream(levels=levels, iterations=iterations).job_count == jobs


def test_dream_per_level_values() -> None:
    d = dream(levels=1, maps={0: 56, 1: [12, 56, 3, 40]}, epochs={1: 7, 0: 5}, epsilon={0: 1, 1: 0.5})
    assert d.maps == {0: 56, 1: [12, 56, 3, 40]}
    assert list(d.epochs) == [0, 1]  # sorted by level
    assert d.epsilon == {0: 1.0, 1: 0.5} and all(type(v) is float for v in d.epsilon.values())
    config = d.dream_config()
    assert [config.map_for(1, t) for t in range(6)] == [12, 56, 3, 40, 12, 56]
    assert (config.epochs_for(0), config.epochs_for(1), config.epsilon_for(1)) == (5, 7, 0.5)


def test_dream_json_level_keys_are_ints() -> None:
    # JSON has only string keys: {"1": ...} is level 1, the same dream as YAML's {1: ...}
    as_json = json.loads(json.dumps({"maps": {"0": 3, "1": [1, 2]}, "epochs": {"0": 4, "1": 5}}))
    assert dream(levels=1, **as_json) == dream(levels=1, maps={0: 3, 1: [1, 2]}, epochs={0: 4, 1: 5})


def test_dream_maps_list_for_every_level() -> None:
    d = dream(levels=1, maps=[4, 5])
    assert d.maps == [4, 5]
    assert [d.dream_config().map_for(level, 0) for level in (0, 1)] == [4, 4]


@pytest.mark.parametrize("params,field,message", [
    ({"image": ""}, "image", "required: the path of a jpg or png file"),
    ({"levels": 6}, "levels", "must be from 0 to 5, got 6"),
    ({"levels": -1}, "levels", "must be from 0 to 5, got -1"),
    ({"levels": True}, "levels", "expected int, got True"),
    ({"iterations": 0}, "iterations", "must be >= 1, got 0"),
    ({"size": 100}, "size", "must be a multiple of 112"),
    ({"levels": 1, "size": 84}, "size", "must be a multiple of 56"),
    ({"levels": 0, "size": 8204}, "size", "up to 8192"),
    ({"maps": True}, "maps", "expected a map index or a non-empty list of map indices"),
    ({"maps": []}, "maps", "got []"),
    ({"maps": "3"}, "maps", "got '3'"),
    ({"maps": [1, True]}, "maps", "got [1, True]"),
    ({"maps": 2.0}, "maps", "got 2.0"),
    ({"maps": -1}, "maps", "index -1 at level 0 is out of range (must be >= 0)"),
    ({"maps": {0: 1, 1: [2, -3], 2: 0}}, "maps", "index -3 at level 1"),
    ({"maps": {-1: 2}}, "maps", "levels are integers >= 0, got the key -1"),
    ({"maps": {"-1": 2}}, "maps", "levels are integers >= 0, got the key '-1'"),
    ({"maps": {"a": 2}}, "maps", "got the key 'a'"),
    ({"maps": {True: 2}}, "maps", "got the key True"),
    ({"maps": {0: True, 1: 1, 2: 1}}, "maps", "for level 0, got True"),
    ({"maps": {0: 1}}, "maps", "gives no value for level 1"),
    ({"epochs": 1.5}, "epochs", "expected an integer or a mapping level -> value, got 1.5"),
    ({"epochs": {0: -1, 1: 1, 2: 1}}, "epochs", "must be >= 0 (level 0), got -1"),
    ({"epochs": {0: 1, 1: 1}}, "epochs", "gives no value for level 2"),
    ({"epsilon": 0}, "epsilon", "must be > 0 (level 0), got 0.0"),
    ({"epsilon": -0.1}, "epsilon", "must be > 0 (level 0), got -0.1"),
    ({"epsilon": {0: 0.1, 1: 0.1, 2: 0}}, "epsilon", "must be > 0 (level 2), got 0.0"),
    ({"epsilon": "x"}, "epsilon", "expected a number or a mapping level -> value, got 'x'"),
    ({"epsilon": False}, "epsilon", "got False"),
    ({"clip": 0}, "clip", "must be in (0, 1], got 0.0"),
    ({"clip": 1.5}, "clip", "must be in (0, 1], got 1.5"),
    ({"levels": 5, "iterations": 73}, "iterations", f"make 100083 jobs; at most {MAX_DREAM_JOBS} per dream"),
])
def test_dream_validate(params: dict, field: str, message: str) -> None:
    e = dream_error(**params)
    assert e.field == field
    assert message in e.message, e.message


def test_dream_job_limit_bound() -> None:
    assert dream(levels=5, iterations=72).job_count == 72 * 1371 <= MAX_DREAM_JOBS


@pytest.mark.parametrize("cls,params,field,message", [
    (DreamTileParams, {"level": 6}, "level", "must be from 0 to 5, got 6"),
    (DreamTileParams, {"level": 1, "size": 84}, "size", "must be a multiple of 56 (= 28 * 2**level, to tile every "
                                                       "level) up to 8192, got 84"),
    (DreamTileParams, {"tile": 1}, "tile", "must be from 0 to 0, got 1"),
    (DreamTileParams, {"level": 1, "tile": 4}, "tile", "must be from 0 to 3, got 4"),
    (DreamTileParams, {"iteration": -1}, "iteration", "must be >= 0, got -1"),
    (DreamTileParams, {"map": -1}, "map", "must be >= 0, got -1"),
    (DreamTileParams, {"epochs": -1}, "epochs", "must be >= 0, got -1"),
    (DreamTileParams, {"epsilon": 0}, "epsilon", "must be > 0, got 0.0"),
    (DreamTileParams, {"level": 1, "image": "/d/in.jpg"}, "image", "only the first tile of a dream reads"),
    (DreamTileParams, {"iteration": 1, "image": "/d/in.jpg"}, "image", "only the first tile of a dream reads"),
    (DreamMergeParams, {"level": -1}, "level", "must be >= 0, got -1"),
    (DreamMergeParams, {"iteration": -1}, "iteration", "must be >= 0, got -1"),
    (DreamMergeParams, {"last_level": False}, "final", "only a merge of the last level can be final"),
    (DreamMergeParams, {"clip": 0}, "clip", "must be in (0, 1], got 0.0"),
])
def test_dream_job_kinds_validate(cls: type, params: dict, field: str, message: str) -> None:
    e = config_error(cls, params)
    assert e.field == field
    assert message in e.message, e.message


@pytest.mark.parametrize("params,maps", [
    ({"model": "cnn"}, 64), ({"model": "cnn", "filters": None}, 64), ({"model": "cnn", "filters": [16, 8]}, 8),
    ({"model": "cnn", "filters": (4, 128)}, 128), ({}, 64),
])
def test_cnn_feature_maps(params: dict, maps: int) -> None:
    assert cnn_feature_maps(params) == maps
