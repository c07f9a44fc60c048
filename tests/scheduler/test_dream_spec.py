"""The ``dream`` spec entry: its expansion into dream_tile / dream_merge jobs, its checks, its fingerprints.

A dream with ``levels`` L and ``iterations`` I is I x (levels 0..L) x 4^level ``dream_tile`` jobs and one
``dream_merge`` per level and iteration, named ``<dream>/i<it>/L<level>/t<tile>`` and ``<dream>/i<it>/L<level>/merge``.
Each tile needs the merge before it (the first tile of the dream: the image file) and the cnn; each merge needs
exactly its level's tiles. ``needs: <dream>`` and ``foreach: <dream>`` mean its last merge.

Every error is a one-line SpecError naming the file, the dream (not one of its tiles) and the field. Real files:
the shared dream_input.jpg, copies of it, and broken files written here. No TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from core.kinds.dream import MAX_DREAM_JOBS, DreamMergeParams, DreamParams, DreamTileParams
from core.params import parse_config
from scheduler.plan import plan_batch
from scheduler.spec import DEFAULT_MAX_ATTEMPTS, BatchSpec, JobSpec
from tests.scheduler.spec_helpers import by_name, check, load, names, spec_error, write

REPO = Path(__file__).resolve().parents[2]
CNN_ROLE = "train job of model cnn (the cnn whose feature maps the dream raises)"
CNN = {"name": "cnn", "kind": "train", "params": {"model": "cnn", "epochs": 1}}
DROP = object()  # a dream param to leave out


@pytest.fixture
def image(shared_data: Path, tmp_path: Path) -> Path:
    """The shared photo, linked into the spec's folder (a data root: a spec reads no file elsewhere)."""
    link = tmp_path / "dream_input.jpg"
    link.symlink_to(shared_data / "dream_input.jpg")
    return link


def dream(image: Path | str | None, name: str = "dream", needs: Any = "cnn", **params: Any) -> dict[str, Any]:
    """A dream entry: levels 1, iterations 2, size 112 unless ``params`` say otherwise (DROP leaves one out)."""
    merged = {"image": str(image) if image is not None else DROP, "levels": 1, "iterations": 2, "size": 112, **params}
    entry: dict[str, Any] = {"name": name, "kind": "dream"}
    if needs is not None:
        entry["needs"] = needs
    entry["params"] = {k: v for k, v in merged.items() if v is not DROP}
    return entry


def batch(*jobs: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    raw: dict[str, Any] = {"batch": "dreams"}
    if defaults:
        raw["defaults"] = defaults
    raw["jobs"] = list(jobs)
    return yaml.safe_dump(raw, sort_keys=False)


def tile(d: str, it: int, level: int, t: int) -> str:
    return f"{d}/i{it}/L{level}/t{t}"


def merge(d: str, it: int, level: int) -> str:
    return f"{d}/i{it}/L{level}/merge"


def expected_names(d: str, levels: int, iterations: int) -> list[str]:
    """The dream's jobs in the order they run: each level's tiles, then its merge."""
    return [n for it in range(iterations) for level in range(levels + 1)
            for n in [*(tile(d, it, level, t) for t in range(4 ** level)), merge(d, it, level)]]


def previous_merge(d: str, it: int, level: int, levels: int) -> str | None:
    if level > 0:
        return merge(d, it, level - 1)
    if it > 0:
        return merge(d, it - 1, levels)
    return None


def of_dream(spec: BatchSpec, d: str) -> list[JobSpec]:
    return [j for j in spec.jobs if j.name.startswith(d + "/")]


def assert_topological(spec: BatchSpec) -> None:
    position = {j.name: i for i, j in enumerate(spec.jobs)}
    assert len(position) == len(spec.jobs)
    for j in spec.jobs:
        for p in j.needs:
            assert position[p] < position[j.name], (p, j.name)


def fps(spec: BatchSpec) -> dict[str, str]:
    return {j.name: j.fingerprint for j in plan_batch(spec).jobs}


# ----------------------------------------------------------------------------------------------------
# The DAG


@pytest.mark.parametrize("levels,iterations,size", [(0, 1, 28), (0, 3, 140), (1, 2, 112), (2, 1, 224), (2, 3, 112),
                                                    (3, 1, 224)])
def test_dag_shape(tmp_path: Path, image: Path, levels: int, iterations: int, size: int) -> None:
    spec = load(tmp_path, batch(CNN, dream(image, levels=levels, iterations=iterations, size=size)))
    assert_topological(spec)
    jobs = by_name(spec)
    mine = of_dream(spec, "dream")
    count = DreamParams(image=str(image), levels=levels, iterations=iterations, size=size).job_count
    assert len(mine) == count == iterations * sum(4 ** level + 1 for level in range(levels + 1))
    assert len(spec.jobs) == count + 1
    assert sorted(j.name for j in mine) == sorted(expected_names("dream", levels, iterations))
    assert names(spec)[0] == "cnn"

    for it in range(iterations):
        for level in range(levels + 1):
            tiles = [tile("dream", it, level, t) for t in range(4 ** level)]
            before = previous_merge("dream", it, level, levels)
            for t, name in enumerate(tiles):
                job = jobs[name]
                assert job.kind == "dream_tile"
                if before is None:  # the dream's first tile: the image file and the cnn
                    assert job.needs == ("cnn",)
                    assert job.params["image"] == str(image.resolve())
                else:
                    assert sorted(job.needs) == sorted([before, "cnn"])
                    assert job.params["image"] is None
                assert {k: v for k, v in job.params.items() if k not in ("map", "image")} == {
                    "size": size, "iteration": it, "level": level, "tile": t, "epochs": 20, "epsilon": 0.05,
                    "threshold": 0.0}
                assert job.params["map"] == 0
                assert parse_config(DreamTileParams, job.params) is not None  # valid params of its kind
            m = jobs[merge("dream", it, level)]
            assert m.kind == "dream_merge"
            assert m.needs == tuple(tiles)  # exactly its level's tiles, no cnn
            last_level = level == levels
            assert dict(m.params) == {"size": size, "iteration": it, "level": level, "last_level": last_level,
                                      "final": last_level and it == iterations - 1, "clip": 0.98}
            assert parse_config(DreamMergeParams, m.params) is not None

    last = merge("dream", iterations - 1, levels)
    assert [j.name for j in mine if j.exported] == [last]
    assert all(j.group == "dream" for j in mine)
    assert all(j.queue == "gpu" and j.priority == 5 and j.max_attempts == DEFAULT_MAX_ATTEMPTS for j in mine)
    assert jobs["cnn"].group is None and jobs["cnn"].exported


def test_dag_with_scheduling_fields(tmp_path: Path, image: Path) -> None:
    entry = {**dream(image, levels=0, iterations=1, size=28), "queue": "dreams", "priority": 8, "max_attempts": 3,
             "timeout": 60}
    spec = load(tmp_path, batch(CNN, entry))
    for j in of_dream(spec, "dream"):
        assert (j.queue, j.priority, j.max_attempts, j.timeout) == ("dreams", 8, 3, 60.0), j.name


def test_maps_per_level_and_per_tile_cycle(tmp_path: Path, image: Path) -> None:
    spec = load(tmp_path, batch(CNN, dream(image, levels=1, maps={0: 56, 1: [12, 56, 3, 40]})))
    jobs = by_name(spec)
    for it in range(2):
        assert jobs[tile("dream", it, 0, 0)].params["map"] == 56
        assert [jobs[tile("dream", it, 1, t)].params["map"] for t in range(4)] == [12, 56, 3, 40]

    # a list shorter than the level's tiles cycles over them, row by row
    spec = load(tmp_path, batch(CNN, dream(image, levels=2, iterations=1, maps={0: 1, 1: [2, 3], 2: [4, 5, 6]})))
    jobs = by_name(spec)
    assert jobs[tile("dream", 0, 0, 0)].params["map"] == 1
    assert [jobs[tile("dream", 0, 1, t)].params["map"] for t in range(4)] == [2, 3, 2, 3]
    assert [jobs[tile("dream", 0, 2, t)].params["map"] for t in range(16)] == [4, 5, 6] * 5 + [4]


def test_maps_one_value_or_one_list_for_every_level(tmp_path: Path, image: Path) -> None:
    jobs = of_dream(load(tmp_path, batch(CNN, dream(image, maps=7))), "dream")
    assert {j.params["map"] for j in jobs if j.kind == "dream_tile"} == {7}
    jobs = by_name(load(tmp_path, batch(CNN, dream(image, iterations=1, maps=[9, 8]))))
    assert jobs[tile("dream", 0, 0, 0)].params["map"] == 9
    assert [jobs[tile("dream", 0, 1, t)].params["map"] for t in range(4)] == [9, 8, 9, 8]


def test_epochs_and_epsilon_per_level(tmp_path: Path, image: Path) -> None:
    spec = load(tmp_path, batch(CNN, dream(image, levels=2, iterations=2, epochs={0: 3, 1: 0, 2: 9},
                                           epsilon={0: 0.5, 1: 1, 2: 0.01}, threshold=0.25)))
    per_level = {0: (3, 0.5), 1: (0, 1.0), 2: (9, 0.01)}
    tiles = [j for j in of_dream(spec, "dream") if j.kind == "dream_tile"]
    assert len(tiles) == 2 * 21
    for j in tiles:
        assert (j.params["epochs"], j.params["epsilon"]) == per_level[j.params["level"]], j.name
        assert type(j.params["epsilon"]) is float
        assert j.params["threshold"] == 0.25


def test_json_style_string_level_keys(tmp_path: Path, image: Path) -> None:
    per_level = {"maps": {0: 56, 1: [12, 56, 3, 40]}, "epochs": {0: 2, 1: 3}, "epsilon": {0: 0.1, 1: 0.2}}
    with_ints = load(tmp_path, batch(CNN, dream(image, **per_level)), name="ints.yaml")
    as_json = json.loads(json.dumps(per_level))
    assert list(as_json["maps"]) == ["0", "1"]
    quoted = load(tmp_path, batch(CNN, dream(image, **as_json)), name="quoted.yaml")
    raw = {"batch": "dreams", "jobs": [CNN, dream(image, **per_level)]}
    json_file = load(tmp_path, json.dumps(raw), name="spec.json")  # a JSON file is YAML too: its keys are strings
    assert json_file.raw["jobs"][1]["params"]["maps"] == {"0": 56, "1": [12, 56, 3, 40]}
    for other in (quoted, json_file):
        assert [(j.name, j.kind, dict(j.params), j.needs) for j in other.jobs] == \
               [(j.name, j.kind, dict(j.params), j.needs) for j in with_ints.jobs]
    assert fps(quoted) == fps(with_ints) == fps(json_file)


@pytest.mark.parametrize("levels", [0, 1, 2])
def test_default_size(tmp_path: Path, image: Path, levels: int) -> None:
    spec = load(tmp_path, batch(CNN, dream(image, levels=levels, iterations=1, size=DROP)))
    sizes = {j.params["size"] for j in of_dream(spec, "dream")}
    assert sizes == {28 * 2 ** levels * 5}


def test_image_path_is_taken_from_the_specs_folder(tmp_path: Path, image: Path) -> None:
    (tmp_path / "pics").mkdir()
    shutil.copyfile(image, tmp_path / "pics" / "in.jpg")
    spec = load(tmp_path, batch(CNN, dream("pics/in.jpg")))
    assert by_name(spec)[tile("dream", 0, 0, 0)].params["image"] == str(tmp_path / "pics" / "in.jpg")
    # from another folder, the same relative path is not there
    other = tmp_path / "elsewhere"
    other.mkdir()
    e = spec_error(other, batch(CNN, dream("pics/in.jpg")))
    check(e, "dream", "params.image", "image not found", str(other / "pics" / "in.jpg"))


def test_png_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60), dtype=np.uint8)).save(tmp_path / "noise.png")
    spec = load(tmp_path, batch(CNN, dream("noise.png", levels=0, iterations=1, size=28)))
    assert by_name(spec)[tile("dream", 0, 0, 0)].params["image"] == str(tmp_path / "noise.png")


def test_image_from_defaults(tmp_path: Path, image: Path) -> None:
    spec = load(tmp_path, batch(CNN, dream(None), defaults={"params": {"image": str(image)}}))
    assert by_name(spec)[tile("dream", 0, 0, 0)].params["image"] == str(image.resolve())


# ----------------------------------------------------------------------------------------------------
# needs, foreach, sweeps


@pytest.mark.parametrize("needs", ["dream", ["dream"]], ids=["str", "list"])
def test_needs_dream_means_its_last_merge(tmp_path: Path, image: Path, needs: Any) -> None:
    spec = load(tmp_path, batch(CNN, dream(image), {"name": "after", "kind": "noop", "needs": needs}))
    assert_topological(spec)
    assert by_name(spec)["after"].needs == (merge("dream", 1, 1),)
    assert names(spec)[-1] == "after"


def test_needs_a_dream_step_by_its_name(tmp_path: Path, image: Path) -> None:
    spec = load(tmp_path, batch(CNN, dream(image), {"name": "peek", "kind": "noop", "needs": merge("dream", 0, 1)}))
    assert_topological(spec)
    assert by_name(spec)["peek"].needs == (merge("dream", 0, 1),)


def test_dream_needs_apply_to_its_tiles_only(tmp_path: Path, image: Path) -> None:
    spec = load(tmp_path, batch({"name": "prep", "kind": "noop"}, CNN, dream(image, needs=["prep", "cnn"])))
    assert_topological(spec)
    for j in of_dream(spec, "dream"):
        if j.kind == "dream_tile":
            assert {"prep", "cnn"} <= set(j.needs), j.name
        else:
            assert not {"prep", "cnn"} & set(j.needs), j.name


def test_foreach_swept_cnn_gives_one_dream_per_cnn(tmp_path: Path, image: Path) -> None:
    cnn = {**CNN, "sweep": {"seed": [0, 1, 2]}}
    entry = {**dream(image, needs=None), "foreach": "cnn"}
    spec = load(tmp_path, batch(cnn, entry,
                                {"name": "after", "kind": "noop", "foreach": "dream"},
                                {"name": "all", "kind": "noop", "needs": "dream"}))
    assert_topological(spec)
    jobs = by_name(spec)
    per_dream = DreamParams(image=str(image), levels=1, iterations=2, size=112).job_count
    assert len(spec.jobs) == 3 + 3 * per_dream + 3 + 1
    for seed in range(3):
        d = f"dream[seed={seed}]"
        mine = of_dream(spec, d)
        assert sorted(j.name for j in mine) == sorted(expected_names(d, 1, 2))
        assert all(j.group == d and j.sweep_values == {"seed": seed} for j in mine)
        for j in mine:
            cnns = [p for p in j.needs if p.startswith("cnn")]
            assert cnns == ([f"cnn[seed={seed}]"] if j.kind == "dream_tile" else []), j.name
        assert jobs[tile(d, 0, 0, 0)].needs == (f"cnn[seed={seed}]",)
        assert jobs[f"after[seed={seed}]"].needs == (merge(d, 1, 1),)
    assert sorted(jobs["all"].needs) == sorted(merge(f"dream[seed={s}]", 1, 1) for s in range(3))


def test_sweep_over_maps_gives_one_dream_per_value(tmp_path: Path, image: Path) -> None:
    entry = {**dream(image), "sweep": {"maps": [3, [1, 2]]}}
    spec = load(tmp_path, batch(CNN, entry, {"name": "after", "kind": "noop", "foreach": "dream"},
                                {"name": "pick", "kind": "noop", "needs": "dream", "sweep": {"value": [1, 2]}}))
    assert_topological(spec)
    jobs = by_name(spec)
    assert tile("dream[maps=3]", 0, 0, 0) in jobs
    assert tile("dream[maps=1-2]", 0, 0, 0) in jobs
    for d, maps in (("dream[maps=3]", [3, 3, 3, 3]), ("dream[maps=1-2]", [1, 2, 1, 2])):
        mine = of_dream(spec, d)
        assert len(mine) == 14
        assert {j.group for j in mine} == {d}
        assert [jobs[tile(d, 1, 1, t)].params["map"] for t in range(4)] == maps
        assert jobs[tile(d, 0, 0, 0)].needs == ("cnn",)
    assert jobs["after[maps=3]"].needs == (merge("dream[maps=3]", 1, 1),)
    assert jobs["after[maps=1-2]"].needs == (merge("dream[maps=1-2]", 1, 1),)
    assert set(jobs["pick[value=1]"].needs) == {merge("dream[maps=3]", 1, 1), merge("dream[maps=1-2]", 1, 1)}


def test_dream_after_a_dream(tmp_path: Path, image: Path) -> None:
    spec = load(tmp_path, batch(CNN, dream(image, name="first"), dream(image, name="second", needs=["cnn", "first"])))
    assert_topological(spec)
    jobs = by_name(spec)
    assert set(jobs[tile("second", 0, 0, 0)].needs) == {"cnn", merge("first", 1, 1)}
    assert merge("first", 1, 1) not in jobs[merge("second", 0, 0)].needs
    assert len(spec.jobs) == 1 + 2 * 14


def test_unrelated_jobs_keep_their_place(tmp_path: Path, image: Path) -> None:
    spec = load(tmp_path, batch({"name": "a", "kind": "noop"}, CNN, dream(image), {"name": "z", "kind": "noop"}))
    assert_topological(spec)
    assert {"a", "z", "cnn"} <= set(names(spec))
    assert len(spec.jobs) == 3 + 14


# ----------------------------------------------------------------------------------------------------
# Errors: one line naming the file, the dream and the field


def test_missing_image_param(tmp_path: Path) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(None)))
    check(e, "dream", "params.image", "required: the path of a jpg or png file")


def test_image_not_found(tmp_path: Path) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(tmp_path / "nope.jpg")))
    check(e, "dream", "params.image", "image not found", "nope.jpg")


@pytest.mark.parametrize("content,fragment", [
    ("truncated", "cannot decode image"),
    (b"this is not a jpeg at all", "not an image Pillow can read"),
    (b"", "not an image Pillow can read"),
], ids=["truncated", "text", "empty"])
def test_corrupt_image(tmp_path: Path, image: Path, content: Any, fragment: str) -> None:
    data = image.read_bytes()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
    e = spec_error(tmp_path, batch(CNN, dream("bad.jpg")))
    check(e, "dream", "params.image", fragment, str(bad))


def test_image_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "pics.jpg").mkdir()
    e = spec_error(tmp_path, batch(CNN, dream("pics.jpg")))
    check(e, "dream", "params.image", "image is a directory, not a file")


def test_missing_image_from_defaults_names_the_defaults(tmp_path: Path) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(None), defaults={"params": {"image": "gone.jpg"}}))
    check(e, "dream", "defaults.params.image", "image not found")


def test_bad_image_in_a_sweep(tmp_path: Path, image: Path) -> None:
    entry = {**dream(None), "sweep": {"image": [str(image), "gone.jpg"]}}
    e = spec_error(tmp_path, batch(CNN, entry))
    check(e, "dream[image=gone.jpg]", "sweep.image", "image not found")


@pytest.mark.parametrize("params,message", [
    ({"levels": 1, "size": 100}, "must be a multiple of 56"),
    ({"levels": 2, "size": 168}, "must be a multiple of 112"),
    ({"levels": 0, "size": 0}, "must be a multiple of 28"),
    ({"levels": 0, "size": 8204}, "up to 8192"),
])
def test_size_not_a_multiple(tmp_path: Path, image: Path, params: dict, message: str) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(image, **params)))
    check(e, "dream", "params.size", message)


def test_size_error_in_a_sweep(tmp_path: Path, image: Path) -> None:
    entry = {**dream(image, size=DROP), "sweep": {"size": [112, 100]}}
    e = spec_error(tmp_path, batch(CNN, entry))
    check(e, "dream[size=100]", "sweep.size", "must be a multiple of 56")


@pytest.mark.parametrize("maps,level", [(64, 0), ({0: 1, 1: [1, 2, 64]}, 1), ({0: 99, 1: 0}, 0)])
def test_map_out_of_the_cnns_range(tmp_path: Path, image: Path, maps: Any, level: int) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(image, maps=maps)))
    check(e, "dream", "params.maps", f"(level {level}) is out of range",
          "features layer of 'cnn' has 64 maps (0 to 63)")


def test_last_map_of_the_cnn_is_fine(tmp_path: Path, image: Path) -> None:
    spec = load(tmp_path, batch(CNN, dream(image, maps={0: 63, 1: [0, 63]})))
    assert {j.params["map"] for j in of_dream(spec, "dream") if j.kind == "dream_tile"} == {0, 63}


def test_map_range_follows_the_cnns_filters(tmp_path: Path, image: Path) -> None:
    small = {**CNN, "params": {"model": "cnn", "filters": [16, 8]}}
    assert load(tmp_path, batch(small, dream(image, maps=[7, 0]))) is not None
    e = spec_error(tmp_path, batch(small, dream(image, maps={0: 1, 1: [7, 8]})))
    check(e, "dream", "params.maps", "map 8 (level 1)", "has 8 maps (0 to 7)")


def test_map_range_of_each_swept_cnn(tmp_path: Path, image: Path) -> None:
    cnn = {**CNN, "sweep": {"filters": [[16, 8], [16, 32]]}}
    entry = {**dream(image, needs=None, maps=20), "foreach": "cnn"}
    e = spec_error(tmp_path, batch(cnn, entry))
    check(e, "dream[filters=16-8]", "params.maps", "has 8 maps")


def test_map_range_uses_the_cnn_not_another_train_parent(tmp_path: Path, image: Path) -> None:
    # a conv_ae parent only orders the jobs: its 128 maps do not let map 100 through for a 64-map cnn
    ae = {"name": "ae", "kind": "train", "params": {"epochs": 1}}
    e = spec_error(tmp_path, batch(ae, CNN, dream(image, needs=["ae", "cnn"], maps=100)))
    check(e, "dream", "params.maps", "features layer of 'cnn' has 64 maps")
    spec = load(tmp_path, batch(ae, CNN, dream(image, needs=["ae", "cnn"], maps=63)))
    assert set(by_name(spec)[tile("dream", 0, 0, 0)].needs) == {"ae", "cnn"}


@pytest.mark.parametrize("needs", [None, "prep"], ids=["no-needs", "noop-only"])
def test_no_cnn(tmp_path: Path, image: Path, needs: Any) -> None:
    e = spec_error(tmp_path, batch({"name": "prep", "kind": "noop"}, CNN, dream(image, needs=needs)))
    check(e, "dream", "needs")
    assert e.message == f"needs a {CNN_ROLE}"


def test_autoencoder_instead_of_a_cnn(tmp_path: Path, image: Path) -> None:
    ae = {"name": "ae", "kind": "train", "params": {"model": "conv_ae", "epochs": 1}}
    e = spec_error(tmp_path, batch(ae, dream(image, needs="ae")))
    check(e, "dream", "needs")
    assert e.message == f"needs a {CNN_ROLE}"


def test_two_cnns(tmp_path: Path, image: Path) -> None:
    other = {**CNN, "name": "cnn2"}
    e = spec_error(tmp_path, batch(CNN, other, dream(image, needs=["cnn", "cnn2"])))
    check(e, "dream", "needs", f"needs at most 1 {CNN_ROLE}, got cnn, cnn2")


def test_swept_cnn_without_foreach(tmp_path: Path, image: Path) -> None:
    cnn = {**CNN, "sweep": {"seed": [0, 1]}}
    e = spec_error(tmp_path, batch(cnn, dream(image)))
    check(e, "dream", "needs", "needs at most 1", "cnn[seed=0], cnn[seed=1]")


@pytest.mark.parametrize("needs,message", [
    (["cnn", "nope"], "needs unknown job 'nope'"),
    (["cnn", "dream"], "a job cannot need itself"),
    (5, "must be a job name or a list of job names"),
], ids=["unknown", "itself", "not-a-name"])
def test_bad_needs_name_the_dream(tmp_path: Path, image: Path, needs: Any, message: str) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(image, needs=needs)))
    check(e, "dream", "needs")
    assert e.message == message


def test_bad_needs_name_the_swept_dream(tmp_path: Path, image: Path) -> None:
    entry = {**dream(image, needs=["cnn", "nope"]), "sweep": {"maps": [1, 2]}}
    e = spec_error(tmp_path, batch(CNN, entry))
    check(e, "dream[maps=1]", "needs", "needs unknown job 'nope'")


def test_cycle_through_a_dream(tmp_path: Path, image: Path) -> None:
    e = spec_error(tmp_path, batch(CNN, {"name": "after", "kind": "noop", "needs": "dream"},
                                   dream(image, needs=["cnn", "after"])))
    check(e, "after", "needs", "dependency cycle: after -> ", merge("dream", 1, 1), tile("dream", 0, 0, 0))


@pytest.mark.parametrize("kind", ["dream_tile", "dream_merge"])
def test_generated_kinds_cannot_be_written(tmp_path: Path, kind: str) -> None:
    e = spec_error(tmp_path, batch(CNN, {"name": "t", "kind": kind, "needs": "cnn"}))
    check(e, "t", "kind", f"{kind} jobs are made by a 'dream' entry, not written by hand: use kind: dream")


def test_unknown_kind_lists_only_the_spec_kinds(tmp_path: Path) -> None:
    e = spec_error(tmp_path, batch({"name": "d", "kind": "dreem"}))
    check(e, "d", "kind")
    assert e.message == "unknown kind 'dreem'; expected one of: cluster, dream, encode, noop, sample, sleep, train"


@pytest.mark.parametrize("levels", [6, -1])
def test_levels_out_of_range(tmp_path: Path, image: Path, levels: int) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(image, levels=levels, size=DROP)))
    check(e, "dream", "params.levels", f"must be from 0 to 5, got {levels}")


def test_too_many_jobs(tmp_path: Path, image: Path) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(image, levels=5, iterations=73, size=DROP)))
    check(e, "dream", "params.iterations", "73 iterations of levels 0..5 make 100083 jobs",
          f"at most {MAX_DREAM_JOBS} per dream")


@pytest.mark.parametrize("maps,fragment", [
    (True, "got True"),
    ([], "got []"),
    ({-1: 3, 0: 1, 1: 1}, "levels are integers >= 0, got the key -1"),
    ({"-1": 3}, "got the key '-1'"),
    ({"one": 3}, "got the key 'one'"),
    ({0: 1, 1: [2, False]}, "for level 1, got [2, False]"),
    ("3", "got '3'"),
    (1.5, "got 1.5"),
    ({0: 1}, "gives no value for level 1"),
    ({0: 1, 1: 2, 7: 3}, "gives a value for level 7, but levels is 1"),  # a typo is not silently dropped
    (-2, "index -2 at level 0 is out of range (must be >= 0)"),
])
def test_bad_maps(tmp_path: Path, image: Path, maps: Any, fragment: str) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(image, maps=maps)))
    check(e, "dream", "params.maps", fragment)


@pytest.mark.parametrize("epsilon,fragment", [
    (0, "must be > 0 (level 0), got 0.0"),
    (-0.5, "must be > 0 (level 0), got -0.5"),
    ({0: 0.1, 1: 0}, "must be > 0 (level 1), got 0.0"),
    ({0: 0.1}, "gives no value for level 1"),
    (True, "got True"),
    ("fast", "got 'fast'"),
])
def test_bad_epsilon(tmp_path: Path, image: Path, epsilon: Any, fragment: str) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(image, epsilon=epsilon)))
    check(e, "dream", "params.epsilon", fragment)


@pytest.mark.parametrize("params,field,fragment", [
    ({"epochs": {0: 1, 1: -1}}, "params.epochs", "must be >= 0 (level 1), got -1"),
    ({"epochs": 2.5}, "params.epochs", "got 2.5"),
    ({"epochs": {0: 1, 1: 1, 2: 1}}, "params.epochs", "gives a value for level 2, but levels is 1"),
    ({"iterations": 0}, "params.iterations", "must be >= 1, got 0"),
    ({"clip": 0}, "params.clip", "must be in (0, 1], got 0.0"),
    ({"octaves": 3}, "params.octaves", "unknown parameter; expected one of: clip, epochs, epsilon, image,"),
])
def test_other_bad_params(tmp_path: Path, image: Path, params: dict, field: str, fragment: str) -> None:
    e = spec_error(tmp_path, batch(CNN, dream(image, **params)))
    check(e, "dream", field, fragment)


def test_errors_come_before_any_file_is_decoded(tmp_path: Path) -> None:
    # a bad param is reported even when the image is missing too: params first, then the file
    e = spec_error(tmp_path, batch(CNN, dream(tmp_path / "gone.jpg", levels=9, size=DROP)))
    check(e, "dream", "params.levels")


# ----------------------------------------------------------------------------------------------------
# Fingerprints


def test_same_image_at_another_path_is_the_same_dream(tmp_path: Path, image: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    shutil.copyfile(image, tmp_path / "a" / "dream_input.jpg")
    shutil.copyfile(image, tmp_path / "b" / "renamed.jpg")
    specs = [load(tmp_path, batch(CNN, dream(path, maps={0: 56, 1: [12, 56, 3, 40]})), name=f"s{i}.yaml")
             for i, path in enumerate([image, "a/dream_input.jpg", "b/renamed.jpg"])]
    firsts = {s.jobs[1].params["image"] for s in specs}
    assert len(firsts) == 3 and all(s.jobs[1].name == tile("dream", 0, 0, 0) for s in specs)
    shared, at_a, at_b = (fps(s) for s in specs)
    assert shared == at_a == at_b
    assert len(set(shared.values())) == len(shared) == 15


def test_another_image_is_another_dream(tmp_path: Path, image: Path) -> None:
    with Image.open(image) as img:
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "flipped.png")
    real = fps(load(tmp_path, batch(CNN, dream(image)), name="real.yaml"))
    flipped = fps(load(tmp_path, batch(CNN, dream("flipped.png")), name="flipped.yaml"))
    assert real.keys() == flipped.keys()
    assert real["cnn"] == flipped["cnn"]
    dream_jobs = [n for n in real if n != "cnn"]
    assert len(dream_jobs) == 14
    for n in dream_jobs:
        assert real[n] != flipped[n], n


def test_changing_a_later_level_keeps_the_shared_prefix(tmp_path: Path, image: Path) -> None:
    base = {0: 1, 1: [2, 3], 2: 4}

    def plan(maps: dict, name: str) -> dict[str, str]:
        return fps(load(tmp_path, batch(CNN, dream(image, levels=2, iterations=2, maps=maps)), name=name))

    before = plan(base, "a.yaml")
    after = plan({**base, 2: 5}, "b.yaml")
    assert before.keys() == after.keys() and len(before) == 1 + 2 * 24
    prefix = {"cnn", *(n for n in expected_names("dream", 2, 1) if "/L2/" not in n)}
    assert len(prefix) == 1 + (1 + 1) + (4 + 1)
    for n in before:
        if n in prefix:
            assert before[n] == after[n], n  # a stored result of these is reusable
        else:
            assert before[n] != after[n], n

    # a tile keeps its fingerprint while its map and its parents do: [4, 5] changes only the odd tiles of i0/L2
    odd = plan({**base, 2: [4, 5]}, "c.yaml")
    for t in range(16):
        assert (odd[tile("dream", 0, 2, t)] == before[tile("dream", 0, 2, t)]) == (t % 2 == 0), t
    assert odd[merge("dream", 0, 2)] != before[merge("dream", 0, 2)]
    assert all(odd[n] != before[n] for n in before if "/i1/" in n)


def test_more_iterations_reuse_every_job_before_the_old_last_merge(tmp_path: Path, image: Path) -> None:
    two = fps(load(tmp_path, batch(CNN, dream(image, levels=1, iterations=2)), name="a.yaml"))
    three = fps(load(tmp_path, batch(CNN, dream(image, levels=1, iterations=3)), name="b.yaml"))
    old_last = merge("dream", 1, 1)
    assert set(two) < set(three)
    for n in two:  # the old last merge was final (it kept final.png): now it is not, so it and what follows change
        assert (two[n] == three[n]) == (n != old_last), n


def test_changing_the_cnn_changes_every_dream_job(tmp_path: Path, image: Path) -> None:
    one = fps(load(tmp_path, batch(CNN, dream(image)), name="a.yaml"))
    cnn = {**CNN, "params": {"model": "cnn", "epochs": 2}}
    two = fps(load(tmp_path, batch(cnn, dream(image)), name="b.yaml"))
    assert all(one[n] != two[n] for n in one)


def test_dream_fingerprints_do_not_depend_on_names(tmp_path: Path, image: Path) -> None:
    a = fps(load(tmp_path, batch(CNN, dream(image)), name="a.yaml"))
    renamed = {**CNN, "name": "net"}
    b = fps(load(tmp_path, batch(renamed, dream(image, name="art", needs="net"), defaults={"priority": 9}),
                 name="b.yaml"))
    assert sorted(a.values()) == sorted(b.values())
    assert a[merge("dream", 1, 1)] == b[merge("art", 1, 1)]


def test_plan_edges_of_a_dream(tmp_path: Path, image: Path) -> None:
    spec = load(tmp_path, batch(CNN, dream(image), {"name": "after", "kind": "noop", "needs": "dream"}))
    plan = plan_batch(spec)
    assert plan.edges == tuple((p, j.name) for j in spec.jobs for p in j.needs)
    # per iteration: L0 (merge->t0, cnn->t0, t0->merge) + L1 (4 tiles x (merge, cnn) + 4 tiles->merge), less
    # the merge before the dream's first tile, and the noop after the last merge
    assert len(plan.edges) == 2 * (3 + 12) - 1 + 1
    assert [j.name for j in plan.jobs] == names(spec)


# ----------------------------------------------------------------------------------------------------
# No TensorFlow on the control plane


def test_parsing_a_dream_spec_does_not_import_tensorflow(tmp_path: Path, image: Path) -> None:
    path = write(tmp_path, batch(CNN, dream(image), {"name": "after", "kind": "noop", "needs": "dream"}))
    code = ("import sys; from pathlib import Path; from scheduler.spec import load_spec; "
            "from scheduler.plan import plan_batch; "
            f"plan = plan_batch(load_spec({str(path)!r}, Path({str(tmp_path / 'no-data')!r}))); "
            "assert len(plan.jobs) == 16, len(plan.jobs); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
