"""Parameters documented from their one definition: ``latentfarm kinds`` and docs/kinds.md come from the params
dataclasses, every parameter has its comment, and the file in the repository is what the code generates."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from core.kinds import KINDS
from core.params import describe_params
from scheduler.cli import cli
from scheduler.cli.kinds import markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kinds.md"


def test_docs_kinds_md_is_what_the_code_generates() -> None:
    assert DOCS.read_text() == markdown(), "docs/kinds.md is stale: latentfarm kinds --markdown > docs/kinds.md"


def test_every_parameter_of_every_kind_says_what_it_does() -> None:
    undocumented = [f"{k}.{d.name}" for k, kind in KINDS.items() for d in describe_params(kind.params)
                    if not d.comment]
    assert undocumented == []


def test_comments_come_from_the_declaring_class_with_continuations_and_leading_lines() -> None:
    docs = {d.name: d for d in describe_params(KINDS["train"].params)}
    assert docs["dataset"].comment.startswith("digits | mnist")  # declared by DataParams, inherited
    assert docs["epochs"].type == "int" and docs["epochs"].default == 10 and not docs["epochs"].required
    assert docs["model"].type == "'conv_ae' | 'pool_ae' | 'face_ae' | 'cnn'"
    sampler = {d.name: d for d in describe_params(KINDS["sample"].params)}["sampler"]
    assert sampler.comment.startswith("where the z-points are drawn") and "encoded test images" in sampler.comment


def test_the_command_lists_kinds_and_a_kinds_parameters() -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["kinds"])
    first_column = {line.split()[0] for line in listed.output.splitlines()[1:] if line.strip()}
    assert listed.exit_code == 0 and {"train", "dream"} <= first_column and "dream_tile" not in first_column
    train = runner.invoke(cli, ["kinds", "train"])
    assert train.exit_code == 0
    for d in describe_params(KINDS["train"].params):
        assert d.name in train.output
    as_json = json.loads(runner.invoke(cli, ["kinds", "cluster", "--json"]).output)
    k = next(p for p in as_json["params"] if p["name"] == "k")
    assert k["default"] == [10] and k["type"] == "list of int" and k["description"]
    wrong = runner.invoke(cli, ["kinds", "nope"])
    assert wrong.exit_code == 2 and "unknown kind 'nope'" in wrong.output
