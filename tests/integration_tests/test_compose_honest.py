"""docker-compose.yml, Dockerfile, .env.example and the README read against the code.

There is no Docker engine to run them here, so these checks keep them honest:
every ``hpsweep`` command they use parses with the real CLI (Click), every
``HPSWEEP_*`` variable is one the CLI reads, the launched config validates,
credentials come from ``.env`` (whose keys ``.env.example`` documents), and
nothing listens on a public address.
"""

from __future__ import annotations

import configparser
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from sqlalchemy import make_url

from coordinator.cli import main
from coordinator.config import load_config
from storage.db import _postgres_engine

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
HPSWEEP_SERVICES = ("coordinator", "worker")
VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}")  # ${VAR}, ${VAR:-x}, ${VAR:?msg}


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` with ``env``; ``$$`` stays."""
    def value(m: re.Match[str]) -> str:
        assert m.group(1) in env, f"${{{m.group(1)}}} is not in .env.example"
        return env[m.group(1)]

    return VAR.sub(value, text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose would see it with ``cp .env.example .env``."""
    text = (ROOT / "docker-compose.yml").read_text()
    return yaml.safe_load(_interpolate(text, _env_example()))


def _cli_envvars() -> set[str]:
    found: set[str] = set()
    for cmd in main.commands.values():
        for p in cmd.params:
            envvar = getattr(p, "envvar", None)
            found.update([envvar] if isinstance(envvar, str) else envvar or [])
    return found


def _check_hpsweep_args(args: list[str]) -> None:
    """``hpsweep ARGS`` names a real command and real options, and Click parses it."""
    assert args and args[0] in main.commands, f"no hpsweep command {args[:1]}"
    cmd = main.commands[args[0]]
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for token in args[1:]:
        if token.startswith("-") and token != "-":
            assert token.split("=", 1)[0] in known, f"hpsweep {args[0]}: no option {token}"
    with cmd.make_context(args[0], list(args[1:])) as ctx:
        assert ctx.params is not None
    for token in args[1:]:
        if token.startswith("configs/"):
            load_config(ROOT / token)  # the repository's example exists and validates


def test_services_exist(compose) -> None:
    assert set(compose["services"]) >= {"redis", "postgres", "pgbouncer", "coordinator",
                                        "worker"}


def test_hpsweep_commands_are_real(compose) -> None:
    for name in HPSWEEP_SERVICES:
        command = compose["services"][name]["command"]
        _check_hpsweep_args(shlex.split(command) if isinstance(command, str) else command)
    assert compose["services"]["coordinator"]["command"][0] == "launch"
    assert compose["services"]["coordinator"]["command"][1].startswith("configs/")
    assert compose["services"]["worker"]["command"][0] == "worker"


def test_hpsweep_env_vars_are_read_by_the_cli(compose) -> None:
    cli_vars, dotenv = _cli_envvars(), _env_example()
    assert {"HPSWEEP_DB", "HPSWEEP_REDIS", "HPSWEEP_CACHE"} <= cli_vars
    for name in HPSWEEP_SERVICES:
        env = compose["services"][name]["environment"]
        assert {"HPSWEEP_DB", "HPSWEEP_REDIS"} <= set(env), name
        assert {k for k in env if k.startswith("HPSWEEP_")} <= cli_vars, name
        db, rq = urlsplit(env["HPSWEEP_DB"]), urlsplit(env["HPSWEEP_REDIS"])
        # workers through PgBouncer (transaction mode: ?pgbouncer=1), the coordinator direct
        server = ("pgbouncer", 6432, "pgbouncer=1") if name == "worker" else ("postgres", 5432, "")
        assert (db.scheme, db.hostname, db.port, db.query) == ("postgresql+psycopg", *server)
        assert (db.username, db.password, db.path) == (
            dotenv["POSTGRES_USER"], dotenv["POSTGRES_PASSWORD"], f"/{dotenv['POSTGRES_DB']}")
        assert (rq.scheme, rq.hostname, rq.port) == ("redis", "redis", 6379)
        assert rq.password == dotenv["REDIS_PASSWORD"]
    dockerfile_vars = re.findall(r"\b(HPSWEEP_[A-Z_]+)=", (ROOT / "Dockerfile").read_text())
    assert set(dockerfile_vars) <= cli_vars


def test_redis_persists_and_has_a_password(compose) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command
    assert re.search(r"requirepass \$\$REDIS_PASSWORD\b", command)
    assert redis["environment"]["REDIS_PASSWORD"] == _env_example()["REDIS_PASSWORD"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_postgres_keeps_its_data_in_a_named_volume(compose) -> None:
    pg = compose["services"]["postgres"]
    volume = next(v.split(":")[0] for v in pg["volumes"]
                  if v.endswith(":/var/lib/postgresql/data"))
    assert volume in compose["volumes"]
    dotenv = _env_example()
    assert {k: pg["environment"][k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD",
                                              "POSTGRES_DB")} == {
        k: dotenv[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")}


def _pgbouncer_ini(compose) -> configparser.ConfigParser:
    """The pgbouncer.ini the pgbouncer service writes at start (a here-document)."""
    script = compose["services"]["pgbouncer"]["command"][-1]
    body = re.search(r"cat > (\S+) <<EOF\n(.*?)\nEOF\n", script, re.S)
    assert body, script
    assert f"exec pgbouncer {body.group(1)}" in script
    ini = configparser.ConfigParser()
    ini.read_string(body.group(2))
    return ini


def test_pgbouncer_pools_transactions_for_the_workers(compose) -> None:
    service, ini = compose["services"]["pgbouncer"], _pgbouncer_ini(compose)
    settings = ini["pgbouncer"]
    assert settings["pool_mode"] == "transaction"
    assert ini["databases"]["*"].split() == ["host=postgres", "port=5432"]
    worker_db = make_url(compose["services"]["worker"]["environment"]["HPSWEEP_DB"])
    assert int(settings["listen_port"]) == worker_db.port
    assert worker_db.query == {"pgbouncer": "1"}
    engine = _postgres_engine(worker_db, readonly=False)  # hpsweep reads the flag; libpq won't
    assert engine.url.query == {} and engine.pool.size() == 1
    engine.dispose()
    # a worker holds up to two client connections; the server keeps room for direct clients
    server_max = 100  # postgres:16's default max_connections (the service does not change it)
    assert int(settings["max_db_connections"]) <= server_max - 10
    assert int(settings["default_pool_size"]) <= int(settings["max_db_connections"])
    assert int(settings["max_client_conn"]) >= 2 * 500
    assert service["ulimits"]["nofile"]["soft"] > int(settings["max_client_conn"]) + 100
    assert int(settings["idle_transaction_timeout"]) > 0  # the guard `options` gave directly
    script = service["command"][-1]
    assert settings["auth_file"] in script and "$$POSTGRES_PASSWORD" in script
    assert {k: service["environment"][k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD")} == {
        k: _env_example()[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD")}
    build = service["build"]["dockerfile_inline"]
    assert "apt-get install" in build and " pgbouncer" in build
    users = re.findall(r"^USER (\S+)$", build, re.M)
    assert users and users[-1] not in ("root", "0")  # pgbouncer refuses to run as root
    assert compose["services"]["worker"]["depends_on"]["pgbouncer"] == {
        "condition": "service_healthy"}


def test_nothing_listens_publicly(compose) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port}"
            assert spec.startswith(("127.0.0.1:", "[::1]:")), f"{name} publishes {port}"
        assert service.get("network_mode") != "host", name


def test_credentials_come_from_the_env_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    dotenv = _env_example()
    assert set(VAR.findall(text)) == set(dotenv)
    for key in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", dotenv[key]), key  # placeholders fit in URLs
        assert dotenv[key] not in text  # only ever interpolated, never written in
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_dockerfile(compose) -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "pip install '.[postgres,datasets]'" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"postgres", "datasets"} <= set(project["optional-dependencies"])
    assert project["scripts"]["hpsweep"] == "coordinator.cli:main"
    assert re.search(r'^ENTRYPOINT \["hpsweep"\]$', text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    for src in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / src).exists(), src
    build = compose["services"]["coordinator"]["build"]
    assert build in (".", {"context": "."})


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Running on many machines")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _code_lines(section: str) -> list[str]:
    """Lines of the section's shell code blocks, comments stripped."""
    lines, lang = [], None
    for line in section.splitlines():
        if line.startswith("```"):
            lang = line[3:].strip() if lang is None else None
        elif lang in ("bash", "sh", ""):
            lines.append(line.split(" #")[0].strip())
    return lines


def test_readme_documents_exactly_these_commands(compose) -> None:
    section = _readme_section()
    lines = _code_lines(section)
    for expected in ("cp .env.example .env", "docker compose up -d redis postgres pgbouncer",
                     "docker compose run --rm coordinator",
                     "docker compose up -d --scale worker=4 worker"):
        assert expected in lines, expected
    for var in (*_env_example(), "HPSWEEP_DB", "HPSWEEP_REDIS"):
        assert var in section, var
    hpsweep_lines = [shlex.split(line) for line in lines if line.startswith("hpsweep ")]
    assert len(hpsweep_lines) >= 4
    for words in hpsweep_lines:
        _check_hpsweep_args(words[1:])
    for words in (shlex.split(line) for line in lines if line.startswith("docker compose")):
        services = compose["services"]
        named = [w for w in words[2:] if w in services or w.startswith("worker=")]
        assert named or words[2] in ("build", "logs"), words
        if words[2] == "run":  # the rest is an hpsweep command line for the entrypoint
            rest = words[words.index("coordinator") + 1:]
            if rest:
                _check_hpsweep_args(rest)


def test_options_in_the_readme_exist() -> None:
    """Every ``--option`` the section names in prose belongs to some hpsweep command."""
    all_opts = {o for cmd in main.commands.values() for p in cmd.params
                for o in (*p.opts, *p.secondary_opts)}
    compose_words = {"--rm", "--scale", "-d", "-f", "-v"}
    for opt in set(re.findall(r"`[^`]*?(--[a-z][a-z-]*)", _readme_section())):
        assert opt in all_opts | compose_words, opt
    assert isinstance(main, click.Group)
