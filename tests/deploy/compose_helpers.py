"""Reading Compose files and Dockerfiles for the deployment tests, and parsing command lines with the CLI."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from tests import services

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
MULTIHOST = REPO / "docker" / "compose.multihost.yml"


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    """Validate ``path`` against the Compose specification's schema, as vendored in check-jsonschema."""
    services.require(importlib.util.find_spec("check_jsonschema") is not None,
                     "check-jsonschema (in the dev extras) is not installed")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def argv(value: str | list[Any] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in ``args``."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target path -> source (volume name or host path) of a service's volumes, short or long syntax."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v.get("source", ""), v["target"]
        out[target] = source
    return out


def dockerfile_of(service: dict[str, Any]) -> Path:
    build = service["build"]
    context = REPO / (build if isinstance(build, str) else build.get("context", "."))
    return context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")


def instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [line.strip() for line in text.splitlines() if line.strip()]


def invocation(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The command path and parameters that ``latentfarm ARGS`` would run, parsed by the real click CLI
    without running anything; each parameter's value is under its name and under each of its flags
    (``--cpu``). Fails the test, naming the problem, if the CLI would refuse ``args``."""
    from scheduler.cli import cli

    command: click.Command = cli
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group):
        if not rest:
            pytest.fail(f"`latentfarm {' '.join(args)}`: no command after `latentfarm {' '.join(path)}`")
        name = rest.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            pytest.fail(f"`latentfarm {' '.join(args)}`: the CLI has no command {' '.join([*path, name])!r} "
                        f"(it has: {', '.join(sorted(command.commands))})")
        command, path = sub, [*path, name]
    try:
        ctx = command.make_context(" ".join(["latentfarm", *path]), rest)
    except click.ClickException as e:
        pytest.fail(f"`latentfarm {' '.join(args)}`: the CLI refuses it: {e.format_message()}")
    params = dict(ctx.params)
    for param in command.params:
        for flag in param.opts:
            if flag.startswith("-"):
                params[flag] = ctx.params.get(param.name or "")
    return path, params


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services of ``base`` with ``override`` applied, as `docker compose -f base -f override` merges the
    keys these files use: environment by variable, volumes by target path, ports appended, the rest replaced."""
    services = {name: dict(svc) for name, svc in base["services"].items()}
    for name, extra in override.get("services", {}).items():
        svc = services.setdefault(name, {})
        for key, value in extra.items():
            if key == "environment":
                svc[key] = {**environment(svc), **environment({key: value})}
            elif key == "volumes":
                by_target = {**{_target(v): v for v in svc.get(key, [])}, **{_target(v): v for v in value}}
                svc[key] = list(by_target.values())
            elif key == "ports":
                svc[key] = [*svc.get(key, []), *value]
            else:
                svc[key] = value
    return services


def _target(volume: str | dict[str, Any]) -> str:
    return volume.split(":")[1] if isinstance(volume, str) else str(volume["target"])


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        got = env.get(name)
        unset = got is None or (got == "" and op is not None and op.startswith(":"))
        if op and op.endswith("?") and unset:
            raise KeyError(f"{name}: {arg}")
        if op and op.endswith("-") and unset:
            return arg
        return got or ""

    return _VARIABLE.sub(one, value)


def variables(text: str) -> set[str]:
    """The names of the variables a Compose file interpolates."""
    return {m.group(1) or m.group(4) for m in _VARIABLE.finditer(text) if m.group(0) != "$$"}
