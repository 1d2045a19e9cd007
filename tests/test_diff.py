"""``make diff`` (scripts/offline_diff.py) on a throwaway clone of this repository.

A commit that moves the llama endpoint to another instance type shows up as exactly that: the
endpoint config's ``InstanceType`` in the llama stack, and the gateway dashboard's text that
names the instance type; nothing in the other stacks. Run with no AWS credentials and, where
the machine allows an unprivileged network namespace, no network at all.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "offline_diff.py"
LLAMA_CONFIG = Path("model_configs") / "llama-2-13b-chat.yaml"
LLAMA = "LlmServing-dev-Model-llama-2-13b-chat"
DEEPSEEK = "LlmServing-dev-Model-deepseek-r1-distill-qwen-7b"
ARTIFACTS = "LlmServing-dev-Artifacts"
GATEWAY = "LlmServing-dev-Gateway"
# Both pass the GPU fit check for Llama-2-13B fp16 with tensor parallelism 4 (4 × 24 GiB).
INSTANCE_TYPES = ("ml.g5.12xlarge", "ml.g6.12xlarge")

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=offline-diff test", "-c", "user.email=test@example.invalid"]
    result = subprocess.run(
        ["git", *identity, "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _offline_env() -> dict[str, str]:
    """This environment without AWS credentials or settings, and nowhere to find any."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_DEFAULT_"))}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


@cache
def _no_network() -> list[str]:
    """``unshare -rn`` (new user and network namespaces: no interface up) where the machine
    allows it; GitHub's Ubuntu runners do not (AppArmor), and there it runs without."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False)
    return [unshare, "-rn"] if probe.returncode == 0 else []


def _offline_diff(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_no_network(), sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=_offline_env(),
        capture_output=True,
        text=True,
        check=False,
    )


def _sections(output: str) -> dict[str, str]:
    """Report body of each stack, by stack name."""
    sections: dict[str, str] = {}
    for chunk in output.split("\n\nStack ")[1:]:
        header, _, body = chunk.partition("\n")
        sections[header.split()[0]] = body.split("\n\nSummary: ")[0]
    return sections


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A clone of this repository's HEAD plus one commit changing the llama instance type;
    returns the clone and the old and new types."""
    path = tmp_path_factory.mktemp("offline-diff") / "repo"
    # This checkout's HEAD, even where it is detached (a CI checkout of a PR's merge commit),
    # which a plain clone would not check out.
    _git(ROOT, "clone", "--quiet", "--local", "--no-checkout", str(ROOT), str(path))
    _git(path, "fetch", "--quiet", "origin", "HEAD")
    _git(path, "checkout", "--quiet", "--detach", "FETCH_HEAD")
    config_path = path / LLAMA_CONFIG
    config = yaml.safe_load(config_path.read_text("utf-8"))
    old = config["instance"]["type"]
    new = next(t for t in INSTANCE_TYPES if t != old)
    config["instance"]["type"] = new
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    _git(path, "commit", "--quiet", "--all", "--message", f"llama on {new}")
    return path, old, new


def test_diff_shows_the_instance_type_change_in_its_stack_only(
    clone: tuple[Path, str, str],
) -> None:
    path, old, new = clone
    result = _offline_diff(path, "--base", "HEAD~1")
    assert result.returncode == 0, result.stderr
    output = result.stdout
    sections = _sections(output)
    assert list(sections) == [ARTIFACTS, DEEPSEEK, LLAMA, GATEWAY]

    llama = sections[LLAMA]
    assert "[~] AWS::SageMaker::EndpointConfig" in llama
    assert f'[-] "InstanceType": "{old}"' in llama
    assert f'[+] "InstanceType": "{new}"' in llama
    assert (
        f'[~] Output InstanceType InstanceType: {{"Value":"{old}"}} to {{"Value":"{new}"}}' in llama
    )
    # The dashboard's endpoint header names the instance type; nothing else in the gateway.
    gateway_resources = [line for line in sections[GATEWAY].splitlines() if line.startswith("[")]
    assert gateway_resources == [
        "[~] AWS::CloudWatch::Dashboard Observability/Dashboard ObservabilityDashboard9A1D08B3"
    ]
    assert new in sections[GATEWAY]
    for unchanged in (ARTIFACTS, DEEPSEEK):
        assert sections[unchanged] == "There were no differences"
    assert "Summary: 2 changed, 0 added, 0 removed, 2 unchanged" in output
    # The llama variant is autoscaled: SageMaker would fail this update; say how to do it.
    warning = f"changes instance type {old} -> {new} while registered for autoscaling"
    assert llama.startswith("WARNING: endpoint LlmServingdevModelllama213bchat-Endpoint-")
    assert warning in llama
    assert "set scaling.enabled: false" in llama
    assert output.rstrip().splitlines()[-1].startswith("WARNING: endpoint ")
    assert output.startswith("Offline cdk diff: working tree (HEAD ")
    assert "against HEAD~1 (" in output.splitlines()[0]

    # Nothing left behind: no worktree registered, nothing written into the clone.
    worktrees = _git(path, "worktree", "list", "--porcelain").splitlines()
    assert [line for line in worktrees if line.startswith("worktree ")] == [f"worktree {path}"]
    assert _git(path, "status", "--porcelain") == ""
    assert not (path / "cdk.out").exists()


def test_unknown_base_ref_fails_clearly(clone: tuple[Path, str, str]) -> None:
    path, _, _ = clone
    result = _offline_diff(path, "--base", "no-such-ref")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "base ref 'no-such-ref' does not exist" in result.stderr


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("offline_diff", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_added_and_removed_stacks_are_reported(
    clone: tuple[Path, str, str], tmp_path: Path
) -> None:
    """One synthesized side, compared with itself less the deepseek stack either way round."""
    path, _, _ = clone
    offline_diff = _script()
    full = offline_diff.synthesize(path, tmp_path / "out", {}, "head")
    without = offline_diff.Side(
        label="base",
        assembly=full.assembly,
        stacks={k: v for k, v in full.stacks.items() if k != DEEPSEEK},
    )
    cdk = offline_diff.find_cdk(path)

    added = offline_diff.compare(without, full, cdk, tmp_path)
    assert (added.added, added.removed, added.changed) == ([DEEPSEEK], [], [])
    (section,) = [s for s in added.sections if s.startswith(f"Stack {DEEPSEEK}")]
    assert section.startswith(f"Stack {DEEPSEEK}  (added: not in base)\n")
    assert "\nResources\n" in section
    assert "[+] AWS::SageMaker::Endpoint " in section
    assert "[+] AWS::SageMaker::EndpointConfig " in section

    removed = offline_diff.compare(full, without, cdk, tmp_path)
    assert (removed.added, removed.removed, removed.changed) == ([], [DEEPSEEK], [])
    (section,) = [s for s in removed.sections if s.startswith(f"Stack {DEEPSEEK}")]
    assert section.startswith(f"Stack {DEEPSEEK}  (removed)\nRemoved: ")
    assert "`cdk deploy` does not delete a deployed" in section
    assert "\n[-] AWS::SageMaker::Endpoint Endpoint" in section
    assert "4 unchanged" not in removed.summary()
    assert removed.summary().startswith("Summary: 0 changed, 0 added, 1 removed, 3 unchanged")

    # Stack settings cdk diff does not show (they are in the manifest, not the template).
    artifacts = full.stacks[ARTIFACTS]
    protected = dataclasses.replace(
        artifacts, termination_protection=True, tags={**artifacts.tags, "owner": "ml"}
    )
    settings = offline_diff.compare(
        full, dataclasses.replace(full, stacks={**full.stacks, ARTIFACTS: protected}), cdk, tmp_path
    )
    assert settings.changed == [ARTIFACTS]
    (section,) = [s for s in settings.sections if s.startswith(f"Stack {ARTIFACTS}")]
    assert section == (
        f"Stack {ARTIFACTS}\n[~] termination protection: False -> True\n[+] stack tag owner=ml"
    )


def _endpoint_template(instance_type: str, *, scaled: bool) -> dict[str, object]:
    resources: dict[str, object] = {
        "Config": {
            "Type": "AWS::SageMaker::EndpointConfig",
            "Properties": {
                "ProductionVariants": [{"VariantName": "AllTraffic", "InstanceType": instance_type}]
            },
        },
        "Endpoint": {
            "Type": "AWS::SageMaker::Endpoint",
            "Properties": {
                "EndpointName": "ep",
                "EndpointConfigName": {"Fn::GetAtt": ["Config", "EndpointConfigName"]},
            },
        },
    }
    if scaled:
        resources["Target"] = {
            "Type": "AWS::ApplicationAutoScaling::ScalableTarget",
            "Properties": {"ResourceId": "endpoint/ep/variant/AllTraffic"},
        }
    return {"Resources": resources}


@pytest.mark.parametrize(
    ("base_scaled", "base_type", "warned"),
    [
        (True, "ml.g5.12xlarge", True),
        (False, "ml.g5.12xlarge", False),
        (True, "ml.g6.12xlarge", False),
    ],
)
def test_instance_type_change_of_an_autoscaled_variant_is_warned(
    tmp_path: Path, base_scaled: bool, base_type: str, warned: bool
) -> None:
    """Step 1 of the procedure (scaling off) deregisters the target, so step 2 (the new type)
    is not warned; nor is a deploy that keeps the type."""
    offline_diff = _script()
    stacks = []
    for side, template in (
        ("base", _endpoint_template(base_type, scaled=base_scaled)),
        ("head", _endpoint_template("ml.g6.12xlarge", scaled=True)),
    ):
        path = tmp_path / f"{side}.template.json"
        path.write_text(json.dumps(template))
        stacks.append(offline_diff.StackArtifact(name="S", template=path))
    warnings = offline_diff.instance_type_warnings(*stacks)
    assert bool(warnings) is warned
