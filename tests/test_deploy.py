"""The deployment files agree with each other: docker-compose.yml, the two Dockerfiles, the
Pushpin configuration and routes made for Docker, and the example's settings.

No Docker engine runs on this machine (nor in CI), so nothing here builds an image or starts a
container: the files are read and parsed (PyYAML for the compose file, configparser for
Pushpin's config, shlex for the Dockerfiles' commands), and each test compares two of them.
They are the mistakes that otherwise show only when someone runs ``docker compose up``: a
signing key changed on one side, a port renamed in one file, an env var nobody reads.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from grip_eventstream.proxies import DEFAULT_SIG_ISSUER, ProxyConfig, parse_proxies

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_DOCKERFILE = ROOT / "Dockerfile"
PUSHPIN_DIR = ROOT / "pushpin"
PUSHPIN_DOCKERFILE = PUSHPIN_DIR / "Dockerfile"
EXAMPLE_SETTINGS = ROOT / "example" / "demo_project" / "settings.py"

# Service names in docker-compose.yml, which are also their host names on its network.
PUSHPIN, APP, DB = "pushpin", "app", "db"
LOOPBACK = ("127.", "localhost", "::1", "[::1]")
# ipc socket paths must fit in sockaddr_un (PUSHPIN.md: 107 bytes).
IPC_PATH_MAX = 107


# --- readers -----------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def service(name: str) -> dict[str, Any]:
    services = compose().get("services") or {}
    assert name in services, f"docker-compose.yml has no service {name!r}"
    svc = services[name]
    assert isinstance(svc, dict)
    return svc


def environment(name: str) -> dict[str, str]:
    """A service's environment, from either compose form (mapping or KEY=VALUE list)."""
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    assert isinstance(env, dict)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


@dataclass(frozen=True)
class PublishedPort:
    host_ip: str
    published: str
    target: str


def published_ports(name: str) -> list[PublishedPort]:
    """A service's ``ports``, short (``[IP:]HOST:CONTAINER``) or long syntax."""
    ports = []
    for entry in service(name).get("ports") or []:
        if isinstance(entry, dict):
            ports.append(
                PublishedPort(
                    str(entry.get("host_ip", "")),
                    str(entry.get("published", "")),
                    str(entry["target"]),
                )
            )
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 1:
            ports.append(PublishedPort("", "", parts[0]))
        elif len(parts) == 2:
            ports.append(PublishedPort("", parts[0], parts[1]))
        else:
            ports.append(PublishedPort(":".join(parts[:-2]), parts[-2], parts[-1]))
    return ports


def grip_url() -> str:
    url = environment(APP).get("GRIP_URL")
    assert url, "the app service sets no GRIP_URL"
    return url


def grip_proxy() -> ProxyConfig:
    """GRIP_URL as the library itself reads it."""
    (proxy,) = parse_proxies(grip_url(), None)
    return proxy


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def dockerfile_args(path: Path, keyword: str) -> list[str]:
    return [args for kw, args in dockerfile_instructions(path) if kw == keyword]


def exposed_ports(path: Path) -> set[int]:
    return {int(p.split("/")[0]) for args in dockerfile_args(path, "EXPOSE") for p in args.split()}


def command_words(args: str) -> list[str]:
    """CMD / ENTRYPOINT arguments as words, exec (JSON) or shell form; ``sh -c`` unwrapped."""
    words: list[str] = json.loads(args) if args.startswith("[") else shlex.split(args)
    if len(words) >= 3 and words[0] in ("sh", "/bin/sh", "bash") and words[1] == "-c":
        return shlex.split(words[2])
    return words


def option_value(words: list[str], *names: str) -> str | None:
    """The value of a command-line option given as ``--opt VALUE`` or ``--opt=VALUE``."""
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                return words[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def gunicorn_bind() -> tuple[str, int]:
    (cmd,) = dockerfile_args(APP_DOCKERFILE, "CMD")
    words = command_words(cmd)
    assert "gunicorn" in words, f"the app image's CMD does not run gunicorn: {cmd}"
    words = words[words.index("gunicorn") :]
    bind = option_value(words, "--bind", "-b")
    assert bind, "gunicorn in the app image's CMD has no --bind"
    host, _, port = bind.rpartition(":")
    return host, int(port)


def pushpin_copies() -> dict[str, str]:
    """Files the Pushpin image copies: image path -> source path (relative to pushpin/)."""
    copies: dict[str, str] = {}
    for args in dockerfile_args(PUSHPIN_DOCKERFILE, "COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        *sources, dest = words
        for source in sources:
            target = dest + Path(source).name if dest.endswith("/") else dest
            copies[target] = source
    return copies


def pushpin_command_config() -> str:
    """The --config path the Pushpin image starts with (a path inside the image)."""
    (cmd,) = dockerfile_args(PUSHPIN_DOCKERFILE, "CMD")
    words = command_words(cmd)
    assert words[:1] == ["pushpin"], f"the Pushpin image's CMD is not pushpin: {cmd}"
    config = option_value(words, "--config")
    assert config, "the Pushpin image starts pushpin without --config"
    return config


def pushpin_config_source() -> Path:
    """The repository file the Pushpin image is started with."""
    config = pushpin_command_config()
    copies = pushpin_copies()
    assert config in copies, f"--config {config} is not a file pushpin/Dockerfile copies"
    return PUSHPIN_DIR / copies[config]


def pushpin_config() -> configparser.ConfigParser:
    # interpolation=None: Pushpin's own placeholders ({libdir}, {rundir}) are not ours.
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(pushpin_config_source().read_text())
    return parser


def routes_in_image() -> tuple[str, Path]:
    """The routes file Pushpin loads in the image: (its image path, the repository file)."""
    config_path = pushpin_command_config()
    routesfile = pushpin_config().get("proxy", "routesfile", fallback="routes")
    # Pushpin resolves routesfile against the config file's folder.
    in_image = (
        routesfile
        if routesfile.startswith("/")
        else (config_path.rsplit("/", 1)[0] + "/" + routesfile)
    )
    copies = pushpin_copies()
    assert in_image in copies, f"routes file {in_image} is not copied by pushpin/Dockerfile"
    return in_image, PUSHPIN_DIR / copies[in_image]


@dataclass(frozen=True)
class Route:
    conditions: str
    targets: tuple[str, ...]

    @property
    def path_beg(self) -> str | None:
        match = re.search(r"(?:^|,)path_beg=([^,]+)", self.conditions)
        return match.group(1) if match else None

    @property
    def catch_all(self) -> bool:
        return self.conditions == "*"


def routes(path: Path) -> list[Route]:
    """Route lines: ``CONDITIONS TARGET[,OPTIONS] [TARGET...]``; comments and blanks skipped."""
    result = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        conditions, *targets = line.split()
        result.append(Route(conditions, tuple(targets)))
    return result


def published_pushpin_port() -> PublishedPort:
    ports = published_ports(PUSHPIN)
    assert len(ports) == 1, f"{PUSHPIN} should publish one port (its client port): {ports}"
    return ports[0]


def port_of(value: str) -> int:
    """The port of ``PORT``, ``ADDR:PORT`` or ``[V6]:PORT``."""
    return int(value.rpartition(":")[2])


def is_loopback(host: str) -> bool:
    return host.startswith(LOOPBACK)


def settings_env_names() -> set[str]:
    """Env var names the example settings read: ``os.environ[...]``, ``os.environ.get(...)``,
    ``os.getenv(...)``, and the first argument of the module's own helpers (``env_list``)
    whose body reads ``os.environ``."""
    tree = ast.parse(EXAMPLE_SETTINGS.read_text())

    def reads_environ(node: ast.AST) -> bool:
        return any(
            isinstance(sub, ast.Attribute)
            and sub.attr in ("environ", "getenv")
            and isinstance(sub.value, ast.Name)
            and sub.value.id == "os"
            for sub in ast.walk(node)
        )

    helpers = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef) and reads_environ(node)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript) and reads_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            if (isinstance(func, ast.Attribute) and reads_environ(func)) or (
                isinstance(func, ast.Name) and func.id in helpers
            ):
                key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
    return names


def settings_default(name: str) -> str | None:
    """The literal default of ``os.environ.get(NAME, DEFAULT)`` / ``helper(NAME, DEFAULT)``."""
    for node in ast.walk(ast.parse(EXAMPLE_SETTINGS.read_text())):
        if (
            isinstance(node, ast.Call)
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == name
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            return node.args[1].value
    return None


# --- the signing key and the control port -------------------------------------------------


def test_grip_url_key_is_pushpins_sig_key() -> None:
    """Pushpin signs Grip-Sig with sig_key; the app verifies with GRIP_URL's key."""
    sig_key = pushpin_config().get("proxy", "sig_key", fallback=None)
    assert sig_key, "pushpin.docker.conf has no sig_key: Grip-Sig could not be verified"
    assert grip_proxy().signature_key == sig_key


def test_signing_key_is_long_enough() -> None:
    """HS256 keys under 32 bytes make PyJWT warn and manage.py check report W003."""
    key = grip_proxy().signature_key
    assert isinstance(key, str)
    assert len(key.encode()) >= 32


def test_grip_url_issuer_is_pushpins_sig_iss() -> None:
    """The app accepts a Grip-Sig only from GRIP_URL's verify-iss ("pushpin" without one),
    which must be Pushpin's sig_iss (also "pushpin" when absent)."""
    sig_iss = pushpin_config().get("proxy", "sig_iss", fallback=DEFAULT_SIG_ISSUER)
    assert grip_proxy().signature_issuer == sig_iss


def test_grip_url_is_pushpins_control_port() -> None:
    """GRIP_URL names the pushpin service and its push_in_http_port, over plain HTTP."""
    control = urlsplit(grip_proxy().control_uri)
    assert control.scheme == "http"
    assert control.hostname == PUSHPIN
    control_port = pushpin_config().getint("handler", "push_in_http_port", fallback=5561)
    assert control.port == control_port
    assert control.path in ("", "/"), "GRIP_URL is the control root; /publish/ is appended"


def test_control_port_listens_for_other_containers() -> None:
    """The app publishes from another container: the control port cannot bind loopback."""
    addr = pushpin_config().get("handler", "push_in_http_addr", fallback=None)
    assert addr, "push_in_http_addr is not set explicitly"
    assert not is_loopback(addr), f"push_in_http_addr={addr} is unreachable from {APP}"


def test_control_port_is_never_published() -> None:
    """The control port has no authentication: compose must not publish it to the host."""
    control_port = str(pushpin_config().getint("handler", "push_in_http_port", fallback=5561))
    for name in compose()["services"]:
        for port in published_ports(name):
            assert control_port not in (port.target, port.published), (name, port)


def test_zeromq_ports_stay_inside_the_pushpin_container() -> None:
    """The ZeroMQ publish/command sockets are unauthenticated too and unused by the app."""
    handler = pushpin_config()["handler"]
    for option in ("push_in_spec", "push_in_sub_specs", "command_spec"):
        for spec in handler.get(option, "").split(","):
            spec = spec.strip()
            if spec.startswith("tcp://"):
                assert is_loopback(spec.removeprefix("tcp://")), f"{option}={spec}"


# --- routes, ports and images --------------------------------------------------------------


def test_routes_file_the_image_loads_targets_gunicorn() -> None:
    """The catch-all route of the routes file copied into the image is app:<gunicorn port>."""
    _, source = routes_in_image()
    _, bind_port = gunicorn_bind()
    catch_all = [route for route in routes(source) if route.catch_all]
    assert catch_all, f"{source.name} has no '*' route: requests would get 502"
    for route in catch_all:
        for target in route.targets:
            host, _, rest = target.partition(":")
            assert host == APP, f"{source.name}: {target} is not the {APP} service"
            assert int(rest.split(",")[0]) == bind_port, f"gunicorn binds {bind_port}"


def test_gunicorn_binds_an_address_pushpin_can_reach() -> None:
    host, port = gunicorn_bind()
    assert not is_loopback(host), f"gunicorn binds {host}: unreachable from {PUSHPIN}"
    assert port in exposed_ports(APP_DOCKERFILE)


def test_pushpin_http_port_is_the_published_port() -> None:
    """Pushpin's client port is the container port compose publishes, on the host's loopback."""
    http_port = port_of(pushpin_config().get("runner", "http_port"))
    published = published_pushpin_port()
    assert int(published.target) == http_port
    assert published.host_ip == "127.0.0.1", "publish on the host's loopback only"
    assert http_port in exposed_ports(PUSHPIN_DOCKERFILE)


def test_pushpin_http_port_listens_beyond_loopback() -> None:
    """Docker forwards published ports to the container's interface, not its loopback."""
    http_port = pushpin_config().get("runner", "http_port")
    for entry in http_port.split(","):
        host = entry.strip().rpartition(":")[0]
        assert not is_loopback(host), f"http_port={http_port} is unreachable from the host"


def test_only_pushpin_publishes_ports() -> None:
    """Clients reach the app only through Pushpin: app and db publish nothing."""
    for name in compose()["services"]:
        if name != PUSHPIN:
            assert not published_ports(name), f"{name} publishes {published_ports(name)}"


def test_pushpin_runs_condure_and_zurl_of_its_own() -> None:
    """Debian's 1.36 (what the image installs) needs zurl listed and the proxy pointed at it:
    otherwise every proxied request hangs."""
    (from_,) = dockerfile_args(PUSHPIN_DOCKERFILE, "FROM")
    assert "bookworm" in from_
    config = pushpin_config()
    services = [s.strip() for s in config.get("runner", "services").split(",")]
    assert services == ["condure", "zurl", "pushpin-proxy", "pushpin-handler"]
    for option in ("zurl_out_specs", "zurl_out_stream_specs", "zurl_in_specs"):
        assert config.get("proxy", option).startswith("ipc://{rundir}/"), option


def test_pushpin_rundir_exists_and_is_writable_in_the_image() -> None:
    """The image creates the rundir owned by the user Pushpin runs as; ipc paths fit."""
    config = pushpin_config()
    rundir = config.get("global", "rundir")
    assert rundir.startswith("/"), "a relative rundir depends on the container's workdir"
    (user,) = dockerfile_args(PUSHPIN_DOCKERFILE, "USER")
    runs = " ".join(dockerfile_args(PUSHPIN_DOCKERFILE, "RUN"))
    assert re.search(rf"install -d -o {re.escape(user)} {re.escape(rundir)}(\s|$|&)", runs)
    prefix = config.get("global", "ipc_prefix", fallback="")
    assert len(f"{rundir}/{prefix}zurl-in-stream") <= IPC_PATH_MAX


def check_readiness_routes(table: list[Route], name: str) -> list[Route]:
    """The routes to Pushpin's built-in `test` target, checked: before the catch-all (the
    first matching line wins), under a path prefix that path_rem removes exactly."""
    catch_all = [i for i, route in enumerate(table) if route.catch_all]
    assert catch_all, f"{name} has no '*' route"
    probes = []
    for index, route in enumerate(table):
        if not (route.targets and route.targets[0].split(",")[0] == "test"):
            continue
        assert index < catch_all[0], f"{name}: the '*' route above it catches its requests"
        prefix = route.path_beg
        assert prefix, f"{name}: a test route without path_beg catches everything"
        match = re.search(r"path_rem=(\d+)", route.targets[0])
        assert match, f"{name}: a test route without path_rem"
        assert int(match.group(1)) == len(prefix.rstrip("/")), f"{name}: path_rem"
        probes.append(route)
    return probes


def test_image_routes_have_no_test_stream() -> None:
    """The image's routes leave Pushpin's test stream out (it would be public), so nothing in
    docker-compose.yml may probe /__ready/."""
    _, source = routes_in_image()
    assert not check_readiness_routes(routes(source), source.name)
    assert "__ready" not in COMPOSE_FILE.read_text()


# --- database ----------------------------------------------------------------------------


def test_app_database_env_is_the_db_service() -> None:
    app, db = environment(APP), environment(DB)
    assert app.get("POSTGRES_HOST") == DB
    for name in ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"):
        assert app.get(name) == db.get(name), name
    # The postgres image listens on 5432 unless told otherwise (PGPORT).
    assert app.get("POSTGRES_PORT", "5432") == db.get("PGPORT", "5432")


def test_app_waits_for_a_healthy_database() -> None:
    """The app runs migrate at start: it must wait for PostgreSQL to accept connections."""
    depends = service(APP).get("depends_on")
    assert isinstance(depends, dict), "depends_on without a condition starts the app too early"
    assert depends.get(DB, {}).get("condition") == "service_healthy"
    healthcheck = service(DB).get("healthcheck") or {}
    test = healthcheck.get("test")
    command = test[-1] if isinstance(test, list) else str(test)
    assert "pg_isready" in command
    db = environment(DB)
    words = shlex.split(command)
    assert option_value(words, "-U") == db["POSTGRES_USER"]
    assert option_value(words, "-d") == db["POSTGRES_DB"]


# --- the example's settings ---------------------------------------------------------------


def test_settings_read_every_app_env_var() -> None:
    """An env var the settings never read is a setting silently not applied."""
    unread = set(environment(APP)) - settings_env_names()
    assert not unread, f"example settings never read {sorted(unread)}"


def test_allowed_hosts_cover_the_browsers_host() -> None:
    """Pushpin passes the browser's Host header on: the URL the compose file tells people to
    open, and the published address, must be in ALLOWED_HOSTS."""
    env = environment(APP)
    allowed = {
        host.strip()
        for host in env.get(
            "DJANGO_ALLOWED_HOSTS", settings_default("DJANGO_ALLOWED_HOSTS") or ""
        ).split(",")
        if host.strip()
    }
    published = published_pushpin_port()
    urls = re.findall(r"https?://[^\s/]+/?", COMPOSE_FILE.read_text())
    assert urls, "docker-compose.yml does not say which URL to open"
    hosts = {published.host_ip or "localhost"}
    for url in urls:
        parts = urlsplit(url)
        if parts.hostname in (PUSHPIN, APP, DB):
            continue  # service-to-service URLs, not the browser's
        assert parts.port == int(published.published), f"{url}: not the published port"
        assert parts.hostname
        hosts.add(parts.hostname)
    assert "*" in allowed or hosts <= allowed, f"{sorted(hosts - allowed)} not allowed"


def test_settings_default_grip_url_shares_the_development_key() -> None:
    """The example outside Docker uses pushpin/pushpin.conf: same development key."""
    default = settings_default("GRIP_URL")
    assert default
    (proxy,) = parse_proxies(default, None)
    dev = configparser.ConfigParser(interpolation=None)
    dev.read_string((PUSHPIN_DIR / "pushpin.conf").read_text())
    assert proxy.signature_key == dev.get("proxy", "sig_key")
    assert urlsplit(proxy.control_uri).port == dev.getint("handler", "push_in_http_port")
