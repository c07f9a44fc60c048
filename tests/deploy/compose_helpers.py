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


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``, nested (``${A-http://${B}:9000}``), ``$$``.
    A required variable that is missing raises KeyError naming it. A default is read only when it is used."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if not value.startswith("$", i):
            out.append(value[i])
            i += 1
        elif value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            end = _closing(value, i + 2)
            out.append(_braced(value[i + 2:end], env))
            i = end + 1
        elif m := _NAME.match(value, i + 1):
            out.append(env.get(m.group(0), ""))
            i = m.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _closing(value: str, start: int) -> int:
    """The index of the ``}`` that closes the ``${`` opened just before ``start``."""
    depth, i = 1, start
    while i < len(value):
        if value.startswith("$$", i):
            i += 2
            continue
        if value.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if value[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed ${{ in {value!r}")


def _braced(inner: str, env: dict[str, str]) -> str:
    m = _NAME.match(inner)
    if m is None:
        raise ValueError(f"not a variable: ${{{inner}}}")
    name, rest = m.group(0), inner[m.end():]
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None:
        if rest:
            raise ValueError(f"not a variable: ${{{inner}}}")
        return env.get(name, "")
    arg = rest[len(op):]
    got = env.get(name)
    unset = got is None or (got == "" and op.startswith(":"))
    if op.endswith("?") and unset:
        raise KeyError(f"{name}: {interpolate(arg, env)}")
    if op.endswith("-") and unset:
        return interpolate(arg, env)
    if op.endswith("+"):
        return "" if unset else interpolate(arg, env)
    return got or ""


def variables(text: str) -> set[str]:
    """The names of the variables a Compose file interpolates, nested ones included."""
    return {m.group(1) or m.group(2) for m in re.finditer(r"\$\$|\$\{(\w+)|\$(\w+)", text) if m.group(0) != "$$"}


def body(path: Path) -> str:
    """The file's text without its comment lines: what Compose interpolates."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def header(path: Path) -> str:
    """The file's leading comment block, with the comment marks removed."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines)


def documented_data_add(path: Path) -> tuple[str, list[str]]:
    """The target of the file that the header's `docker compose run ... -v "$PWD/F:TARGET:ro" scheduler data add
    ...` mounts, and the CLI arguments of that command (after ``latentfarm``)."""
    m = re.search(r'-v "\$PWD/[^:"]+:([^:"]+):ro" \\\n\s*scheduler (data add [^#\n]*?)\s*(?:#|$)', header(path), re.M)
    assert m, f"{path.name}: the header shows no `docker compose run ... scheduler data add ...`"
    return m.group(1), shlex.split(m.group(2))


def named_volume_users(services: dict[str, dict[str, Any]], volumes: dict[str, Any]) -> dict[str, list[str]]:
    """Each named volume of the file -> the services that mount it."""
    users: dict[str, list[str]] = {name: [] for name in volumes}
    for name, svc in services.items():
        for source in mounts(svc).values():
            if source in users:
                users[source].append(name)
    return users


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> host path of a service's bind mounts (a source that is a path, not a volume's name)."""
    return {target: source for target, source in mounts(service).items()
            if source.startswith((".", "/", "~", "$"))}
