"""Terraform under terraform/: formatting, validation, and the mocked-provider tests, all offline.

`terraform init` needs the AWS provider from a local plugin mirror (a folder holding
registry.terraform.io/hashicorp/aws/<version>/<os>_<arch>/). It is taken from TF_PLUGIN_DIR, or
found by looking two levels below the filesystem root. init and validate run in a temporary copy
of terraform/, so no .terraform/ folder or lock file is ever written into the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = ROOT / "terraform"
MODULES = sorted(p.name for p in (TERRAFORM_DIR / "modules").iterdir() if p.is_dir())
PROVIDER = Path("registry.terraform.io", "hashicorp", "aws")
NOT_SEARCHED = {"proc", "sys", "dev"}
COPY_IGNORE = shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate", "*.tfstate.*")


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _is_mirror(path: str | Path) -> bool:
    try:
        return (Path(path) / PROVIDER).is_dir()
    except OSError:
        return False


def find_plugin_dir() -> Path | None:
    """TF_PLUGIN_DIR if set, else the first folder at depth 1 or 2 under / holding the AWS provider."""
    if os.environ.get("TF_PLUGIN_DIR"):
        return Path(os.environ["TF_PLUGIN_DIR"])
    for top in _listdir("/"):
        if top in NOT_SEARCHED:
            continue
        first = os.path.join("/", top)
        if _is_mirror(first):
            return Path(first)
        for child in _listdir(first):
            second = os.path.join(first, child)
            if _is_mirror(second):
                return Path(second)
    return None


@pytest.fixture(scope="session")
def terraform() -> str:
    path = shutil.which("terraform")
    assert path, "terraform is not on PATH: install Terraform >= 1.5 to run the deployment tests"
    return path


@pytest.fixture(scope="session")
def plugin_dir() -> Path:
    found = find_plugin_dir()
    assert found is not None, (
        "no Terraform plugin mirror with registry.terraform.io/hashicorp/aws was found two levels "
        "below /; set TF_PLUGIN_DIR to a folder that holds one (e.g. filled by "
        "`terraform providers mirror <dir>` on a machine with internet access)"
    )
    assert _is_mirror(found), f"TF_PLUGIN_DIR={found} holds no {PROVIDER} folder"
    return found


@pytest.fixture(scope="session")
def tf_env(tmp_path_factory) -> dict[str, str]:
    """Environment for terraform: no CLI config from the machine, no checkpoint calls, no TF_VAR_*."""
    cli_config = tmp_path_factory.mktemp("tfcli") / "terraformrc"
    cli_config.write_text("")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("TF_VAR_") and k not in ("TF_DATA_DIR", "TF_WORKSPACE")
    }
    env.update(
        CHECKPOINT_DISABLE="1",
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        TF_CLI_CONFIG_FILE=str(cli_config),
    )
    return env


def run_tf(terraform: str, args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300):
    return subprocess.run(
        [terraform, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def init_copy(terraform: str, source: Path, dest: Path, plugin_dir: Path, env: dict[str, str]) -> Path:
    shutil.copytree(source, dest, ignore=COPY_IGNORE)
    result = run_tf(
        terraform, ["init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={plugin_dir}"], dest, env
    )
    assert result.returncode == 0, (
        f"terraform init failed in a copy of {source.relative_to(ROOT)}:\n{result.stdout}\n{result.stderr}"
    )
    return dest


@pytest.fixture(scope="session")
def root_copy(terraform, plugin_dir, tf_env, tmp_path_factory) -> Path:
    """terraform/ copied to a temporary folder and initialised there."""
    return init_copy(terraform, TERRAFORM_DIR, tmp_path_factory.mktemp("tf") / "terraform", plugin_dir, tf_env)


def assert_valid(terraform: str, cwd: Path, env: dict[str, str], what: str) -> None:
    # -no-tests: the .tftest.hcl files are exercised by `terraform test` below.
    result = run_tf(terraform, ["validate", "-json", "-no-color", "-no-tests"], cwd, env)
    report = json.loads(result.stdout)
    messages = "\n".join(f"{d['severity']}: {d['summary']}: {d.get('detail', '')}" for d in report["diagnostics"])
    assert report["valid"] and result.returncode == 0, f"{what} is not valid:\n{messages}"
    assert report["warning_count"] == 0, f"{what} validates with warnings:\n{messages}"


def test_plugin_discovery_finds_the_aws_provider(plugin_dir):
    versions = sorted(p.name for p in (plugin_dir / PROVIDER).iterdir() if p.is_dir())
    assert any(v.startswith("5.") for v in versions), f"{plugin_dir / PROVIDER} has no 5.x provider: {versions}"


def test_fmt_is_clean(terraform, tf_env):
    result = run_tf(terraform, ["fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM_DIR)], ROOT, tf_env)
    assert result.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{result.stdout}{result.stderr}"


def test_root_module_validates(terraform, tf_env, root_copy):
    assert_valid(terraform, root_copy, tf_env, "the root module (terraform/)")
    assert not (TERRAFORM_DIR / ".terraform").exists(), "terraform init must never run inside the repository"


def test_modules_pin_terraform_and_provider():
    for folder in [TERRAFORM_DIR, *(TERRAFORM_DIR / "modules" / m for m in MODULES)]:
        text = (folder / "versions.tf").read_text()
        where = folder.relative_to(ROOT)
        assert re.search(r'required_version\s*=\s*">= 1\.5"', text), f"{where}/versions.tf: required_version >= 1.5"
        assert re.search(r'version\s*=\s*"~> 5\.100"', text), f"{where}/versions.tf: hashicorp/aws ~> 5.100"


def test_example_tfvars_sets_only_declared_variables():
    declared = set()
    for tf in TERRAFORM_DIR.glob("*.tf"):
        declared |= set(re.findall(r'^variable\s+"([A-Za-z0-9_]+)"', tf.read_text(), re.M))
    assigned = set(re.findall(r"^([A-Za-z0-9_]+)\s*=", (TERRAFORM_DIR / "example.tfvars").read_text(), re.M))
    assert assigned, "example.tfvars assigns nothing"
    assert assigned <= declared, f"example.tfvars sets undeclared variables: {sorted(assigned - declared)}"


def _terraform_test(terraform: str, cwd: Path, env: dict[str, str], *args: str) -> str:
    result = run_tf(terraform, ["test", "-no-color", *args], cwd, env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"terraform test {' '.join(args)} failed:\n{output}"
    match = re.search(r"Success! (\d+) passed, 0 failed\.", output)
    assert match and int(match.group(1)) > 0, f"no passing runs reported:\n{output}"
    assert " skip" not in output, f"some runs were skipped:\n{output}"
    return output


def test_every_module_is_applied_alone_in_the_module_tests():
    """Each module gets its own mocked plan/apply (which validates it alone, without the root)."""
    text = (TERRAFORM_DIR / "tests" / "modules.tftest.hcl").read_text()
    exercised = set(re.findall(r'source\s*=\s*"\./modules/([a-z_]+)"', text))
    assert exercised == set(MODULES), f"modules without a run in modules.tftest.hcl: {sorted(set(MODULES) - exercised)}"


def test_modules_behave_under_a_mocked_provider(terraform, tf_env, root_copy):
    """terraform/tests/modules.tftest.hcl: each module applied against a mocked AWS provider."""
    output = _terraform_test(terraform, root_copy, tf_env, "-filter=tests/modules.tftest.hcl")
    runs = re.findall(r'^run "([a-z0-9_]+)"', (TERRAFORM_DIR / "tests" / "modules.tftest.hcl").read_text(), re.M)
    assert len(runs) >= 10
    for run in runs:
        assert f'run "{run}"... pass' in output, f"run {run} did not pass:\n{output}"


def test_stack_applies_with_example_tfvars_under_a_mocked_provider(terraform, tf_env, root_copy):
    """terraform/tests/stack.tftest.hcl: the whole stack with example.tfvars, CPU and GPU embedder."""
    output = _terraform_test(terraform, root_copy, tf_env, "-filter=tests/stack.tftest.hcl", "-var-file=example.tfvars")
    assert 'run "gpu_embedder"... pass' in output
    assert "undeclared variable" not in output, output
