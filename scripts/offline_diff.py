#!/usr/bin/env python3
"""Offline ``cdk diff``: what a change does to the synthesized stacks, with no AWS account.

Synthesizes a base git ref (in a temporary ``git worktree``) and the head (the working tree,
or ``--head REF``), then compares every stack's template with the pinned CDK CLI:
``cdk diff --app <head assembly> --template <base template> <stack>``. Stacks only in the head
are diffed against an empty template (all resources added); stacks only in the base are listed
with their resources. A report, not a gate: exit 0 whatever it finds; exit 2 when it cannot
run (unknown ref, synth failure).

Both sides are synthesized the same way, by running the CDK app with the context the CDK CLI
would pass (``cdk.json``, ``cdk.context.json``, ``-c`` values, path metadata) plus
``aws:cdk:bundling-stacks: []``, so no asset is bundled: this is fast and needs neither the
wheelhouse nor Docker. Asset hashes are unaffected: the gateway function's hash is a source
fingerprint (``AssetHashType.SOURCE``) and the LMI ``model.tar.gz`` is byte-reproducible, so
an asset shows up in the diff only when its sources (or bundling options) change. Asset
metadata is left off: unbundled assets point at their source directory, which differs
between the two sides.

Both sides run with this interpreter (this checkout's venv), each importing its own code (its
directory and its pyproject's package roots go first on ``PYTHONPATH``, ahead of the venv's
editable install of this checkout). A base ref that needs other Python dependencies than the
venv has cannot be synthesized this way.

    scripts/offline_diff.py                        # base: origin/main, else main, else HEAD~1
    scripts/offline_diff.py --base v1.2 -c stage=prod 'LlmServing-prod-Model-*'
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASES = ("origin/main", "main")
NO_DIFFERENCES = "There were no differences"
STACK_ARTIFACT = "aws:cloudformation:stack"
# What the CDK CLI adds to the app's context on `cdk synth` (toolkit-lib contextFromSettings),
# except bundling: no stack is bundled here.
BUNDLING_STACKS = "aws:cdk:bundling-stacks"
PATH_METADATA = "aws:cdk:enable-path-metadata"
VERSION_REPORTING = "aws:cdk:version-reporting"
DISABLE_VERSION_REPORTING = "aws:cdk:disable-version-reporting"
FAIL_ON_VALIDATION_ERRORS = "@aws-cdk/core:failSynthOnValidationErrors"
_PYTHON = re.compile(r"python(3(\.\d+)?)?")
# The CLI's closing line; this script prints its own summary instead.
_CLI_SUMMARY = re.compile(r"^\W*Number of stacks with differences: \d+\s*$")


class DiffError(Exception):
    """The diff could not be made; the message says why."""


@dataclass(frozen=True)
class StackArtifact:
    """One stack of a cloud assembly, as ``manifest.json`` describes it."""

    name: str
    template: Path
    environment: str = ""
    termination_protection: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def load_template(self) -> dict[str, Any]:
        return _load_json(self.template)


@dataclass(frozen=True)
class Side:
    """A synthesized side of the comparison: a label for the report and its stacks."""

    label: str
    assembly: Path
    stacks: dict[str, StackArtifact]


def _load_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text("utf-8"))
    if not isinstance(data, dict):
        raise DiffError(f"{path}: expected a JSON object")
    return data


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DiffError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def resolve_commit(repo: Path, ref: str) -> str | None:
    """The commit ``ref`` names in ``repo``, or None if there is none."""
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def default_base(repo: Path) -> str:
    """``origin/main`` if it exists; else ``main`` unless it is HEAD itself; else ``HEAD~1``."""
    head = resolve_commit(repo, "HEAD")
    for ref in DEFAULT_BASES:
        commit = resolve_commit(repo, ref)
        if commit and (ref.startswith("origin/") or commit != head):
            return ref
    if resolve_commit(repo, "HEAD~1"):
        return "HEAD~1"
    raise DiffError("no base to compare with (no origin/main, main or HEAD~1): pass --base REF")


def synth_context(source: Path, user_context: dict[str, str]) -> dict[str, Any]:
    """The context ``cdk synth`` would give the app in ``source``, with bundling off."""
    settings = _load_json(source / "cdk.json") if (source / "cdk.json").is_file() else {}
    context: dict[str, Any] = dict(settings.get("context", {}))
    if (source / "cdk.context.json").is_file():
        context.update(_load_json(source / "cdk.context.json"))
    context.update(user_context)
    if settings.get("pathMetadata", True):
        context[PATH_METADATA] = True
    # No asset metadata: unbundled assets are staged in place, so ``aws:asset:path`` would
    # be each side's absolute source path (a worktree in a temp dir) and differ every time.
    if settings.get("versionReporting", True):
        context[VERSION_REPORTING] = True
    else:
        context[DISABLE_VERSION_REPORTING] = True
    context[BUNDLING_STACKS] = []
    context[FAIL_ON_VALIDATION_ERRORS] = False
    return context


def app_command(source: Path) -> list[str]:
    """``cdk.json``'s ``app`` command, with this interpreter in place of ``python3``."""
    settings = _load_json(source / "cdk.json") if (source / "cdk.json").is_file() else {}
    argv = shlex.split(str(settings.get("app") or "python3 app.py"))
    if argv and Path(argv[0]).name == "cdk-app":  # scripts/cdk-app: app.py with a venv's python
        return [sys.executable, "app.py", *argv[1:]]
    if argv and _PYTHON.fullmatch(Path(argv[0]).name):
        argv[0] = sys.executable
    return argv


def import_roots(source: Path) -> list[Path]:
    """Where the app in ``source`` imports its own code from: ``source`` and the package roots
    its ``pyproject.toml`` declares. On ``PYTHONPATH`` they come before the venv's editable
    install, which maps the packages to this checkout, not to the side being synthesized."""
    roots = [source]
    pyproject = source / "pyproject.toml"
    if pyproject.is_file():
        setuptools = tomllib.loads(pyproject.read_text("utf-8")).get("tool", {}).get("setuptools")
        where = (setuptools or {}).get("packages", {}).get("find", {}).get("where", [])
        roots += [source / str(w) for w in where if (source / str(w)).resolve() != source]
    return roots


def read_stacks(assembly: Path) -> dict[str, StackArtifact]:
    """The top-level stacks of a cloud assembly, in manifest order, by name."""
    manifest = _load_json(assembly / "manifest.json")
    stacks: dict[str, StackArtifact] = {}
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") != STACK_ARTIFACT:
            continue
        properties = artifact.get("properties", {})
        name = str(artifact.get("displayName") or artifact_id)
        stacks[name] = StackArtifact(
            name=name,
            template=assembly / properties["templateFile"],
            environment=str(artifact.get("environment", "")),
            termination_protection=bool(properties.get("terminationProtection", False)),
            tags=dict(properties.get("tags", {})),
        )
    return stacks


def synthesize(source: Path, outdir: Path, user_context: dict[str, str], label: str) -> Side:
    """Run the CDK app in ``source`` into ``outdir``, as ``cdk synth`` would but unbundled."""
    python_path = [str(root) for root in import_roots(source)]
    if os.environ.get("PYTHONPATH"):
        python_path.append(os.environ["PYTHONPATH"])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(python_path),
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps(synth_context(source, user_context)),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": os.environ.get(
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20"
        ),
    }
    result = subprocess.run(
        app_command(source), cwd=source, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not (outdir / "manifest.json").is_file():
        output = (result.stderr + result.stdout).strip()
        raise DiffError(f"synthesizing {label} failed (exit {result.returncode}):\n{output}")
    return Side(label=label, assembly=outdir, stacks=read_stacks(outdir))


def find_cdk(repo: Path) -> str:
    """The pinned CLI: the repository's ``node_modules``, this checkout's, else ``PATH``."""
    for root in (repo, SCRIPT_ROOT):
        candidate = root / "node_modules" / ".bin" / "cdk"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("cdk")
    if found is None:
        raise DiffError("the CDK CLI is not installed: run `make setup` (npm ci) first")
    return found


def cdk_diff(cdk: str, head: Side, stack: str, base_template: Path, workdir: Path) -> str:
    """``cdk diff`` of ``stack`` in the head assembly against ``base_template``, without the
    CLI's ``Stack <name>`` header and closing summary."""
    argv = [
        cdk,
        "diff",
        "--app",
        str(head.assembly),
        "--template",
        str(base_template),
        "--exclusively",
        "--no-color",
        "--no-notices",
        stack,
    ]
    env = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true", "CDK_DISABLE_VERSION_CHECK": "true"}
    # cwd without a cdk.json: the assembly is all the CLI needs.
    result = subprocess.run(
        argv,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DiffError(f"cdk diff {stack} failed (exit {result.returncode}):\n{result.stdout}")
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    lines = [line for line in lines if not _CLI_SUMMARY.match(line)]
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and lines[0].strip() == f"Stack {stack}":
        lines.pop(0)
    return "\n".join(lines).strip("\n")


def property_changes(base: StackArtifact, head: StackArtifact) -> list[str]:
    """Stack settings that live in the manifest, not the template (``cdk diff`` omits them)."""
    changes: list[str] = []
    if base.environment != head.environment:
        changes.append(f"[~] environment: {base.environment} -> {head.environment}")
    if base.termination_protection != head.termination_protection:
        changes.append(
            "[~] termination protection: "
            f"{base.termination_protection} -> {head.termination_protection}"
        )
    for key in sorted(base.tags.keys() | head.tags.keys()):
        old, new = base.tags.get(key), head.tags.get(key)
        if old == new:
            continue
        if old is None:
            changes.append(f"[+] stack tag {key}={new}")
        elif new is None:
            changes.append(f"[-] stack tag {key}={old}")
        else:
            changes.append(f"[~] stack tag {key}: {old} -> {new}")
    return changes


def _variant_types(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(endpoint name, variant name) → instance type, for endpoints with a literal name."""
    resources: dict[str, Any] = template.get("Resources", {})
    types: dict[tuple[str, str], str] = {}
    for resource in resources.values():
        if resource.get("Type") != "AWS::SageMaker::Endpoint":
            continue
        props = resource.get("Properties", {})
        name, config_ref = props.get("EndpointName"), props.get("EndpointConfigName")
        if not isinstance(name, str) or not isinstance(config_ref, dict):
            continue
        config_id = (config_ref.get("Fn::GetAtt") or [config_ref.get("Ref")])[0]
        config = resources.get(config_id, {}).get("Properties", {})
        for variant in config.get("ProductionVariants", []):
            if isinstance(variant.get("InstanceType"), str):
                types[(name, variant["VariantName"])] = variant["InstanceType"]
    return types


def _scaled_variants(template: dict[str, Any]) -> set[tuple[str, str]]:
    """(endpoint name, variant name) of every SageMaker variant registered for autoscaling."""
    scaled: set[tuple[str, str]] = set()
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::ApplicationAutoScaling::ScalableTarget":
            continue
        resource_id = resource.get("Properties", {}).get("ResourceId")
        parts = resource_id.split("/") if isinstance(resource_id, str) else []
        if len(parts) == 4 and parts[0] == "endpoint" and parts[2] == "variant":
            scaled.add((parts[1], parts[3]))
    return scaled


def instance_type_warnings(base: StackArtifact, head: StackArtifact) -> list[str]:
    """SageMaker fails an endpoint update that changes the instance type of a variant
    registered for autoscaling ("If the update would change the instance type for any model
    that is a target for auto scaling, the update fails", sagemaker/latest/dg/
    endpoint-scaling-update.html): warn with the two-step procedure."""
    base_template = base.load_template()
    before, after = _variant_types(base_template), _variant_types(head.load_template())
    warnings = []
    for key in sorted(_scaled_variants(base_template) & before.keys() & after.keys()):
        if before[key] != after[key]:
            endpoint, variant = key
            warnings.append(
                f"WARNING: endpoint {endpoint} variant {variant} changes instance type "
                f"{before[key]} -> {after[key]} while registered for autoscaling: SageMaker "
                "fails that update (and CloudFormation rolls back). Deploy in two steps: "
                "(1) set scaling.enabled: false in the model config and deploy (this "
                "deregisters the scalable target); (2) change instance.type, set "
                "scaling.enabled: true, deploy. README: Changing the instance type."
            )
    return warnings


def removed_stack_report(stack: StackArtifact, base_label: str) -> str:
    resources: dict[str, Any] = stack.load_template().get("Resources", {})
    lines = [
        f"Removed: only {base_label} defines this stack. `cdk deploy` does not delete a deployed",
        f"stack: run `cdk destroy {stack.name}` on the base, or delete it in CloudFormation.",
        "Its resources:",
    ]
    lines += [
        f"[-] {resource.get('Type', '?')} {logical_id}"
        for logical_id, resource in sorted(resources.items())
    ]
    return "\n".join(lines)


@dataclass
class Report:
    sections: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, stack: str, body: str, note: str = "") -> None:
        header = f"Stack {stack}" + (f"  ({note})" if note else "")
        self.sections.append(f"{header}\n{body}")

    def summary(self) -> str:
        parts = [
            f"{len(self.changed)} changed",
            f"{len(self.added)} added",
            f"{len(self.removed)} removed",
            f"{len(self.unchanged)} unchanged",
        ]
        lines = [f"Summary: {', '.join(parts)}"]
        for title, names in (
            ("changed", self.changed),
            ("added", self.added),
            ("removed", self.removed),
        ):
            lines += [f"  {title}: {name}" for name in names]
        lines += self.warnings
        return "\n".join(lines)


def compare(
    base: Side, head: Side, cdk: str, workdir: Path, patterns: Sequence[str] = ()
) -> Report:
    """Diff every stack of either side (those matching ``patterns``, if any)."""
    names = list(head.stacks) + [name for name in base.stacks if name not in head.stacks]
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not names:
            raise DiffError(f"no stack matches {' '.join(patterns)}")
    empty = workdir / "empty.template.json"
    empty.write_text("{}\n", "utf-8")

    def body(name: str) -> str | None:
        """The CLI's diff of ``name``, or None when the templates are equal."""
        if name not in head.stacks:
            return None
        if name not in base.stacks:
            return cdk_diff(cdk, head, name, empty, workdir)
        base_stack, head_stack = base.stacks[name], head.stacks[name]
        if base_stack.load_template() == head_stack.load_template():
            return None
        return cdk_diff(cdk, head, name, base_stack.template, workdir)

    with ThreadPoolExecutor(max_workers=4) as pool:
        bodies = dict(zip(names, pool.map(body, names), strict=True))

    report = Report()
    for name in names:
        text = bodies[name]
        if name not in head.stacks:
            report.removed.append(name)
            report.add(name, removed_stack_report(base.stacks[name], base.label), "removed")
            continue
        if name not in base.stacks:
            report.added.append(name)
            report.add(name, text or "", f"added: not in {base.label}")
            continue
        changes = property_changes(base.stacks[name], head.stacks[name])
        if text is not None and text.strip() == NO_DIFFERENCES:
            text = None  # different JSON, same diff (e.g. CDK metadata only)
        if text is None and not changes:
            report.unchanged.append(name)
            report.add(name, NO_DIFFERENCES)
            continue
        report.changed.append(name)
        warnings = instance_type_warnings(base.stacks[name], head.stacks[name])
        report.warnings += warnings
        report.add(name, "\n".join([*warnings, *changes, *([text] if text else [])]))
    return report


@contextmanager
def worktree(repo: Path, commit: str, path: Path) -> Iterator[Path]:
    """A detached ``git worktree`` of ``commit`` at ``path``, removed afterwards."""
    _git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path
    finally:
        result = subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:  # leave no registration behind for a vanished directory
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=repo, check=False)


def parse_context(values: Sequence[str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise DiffError(f"context must be KEY=VALUE, got {value!r}")
        if key.startswith("aws:"):
            raise DiffError(f"context keys prefixed with 'aws:' are reserved, got {key!r}")
        context[key] = val
    return context


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Offline cdk diff of the working tree (or --head) against a git ref: "
        "no AWS credentials, no network.",
    )
    parser.add_argument(
        "--base", help="git ref to compare with (default: origin/main, else main, else HEAD~1)"
    )
    parser.add_argument("--head", help="git ref to diff instead of the working tree")
    parser.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="CDK context for both sides, as for cdk synth (repeatable)",
    )
    parser.add_argument(
        "-C", "--repo", type=Path, help="the git repository (default: the one around the cwd)"
    )
    parser.add_argument("stacks", nargs="*", help="only these stacks (glob patterns)")
    return parser.parse_args(argv)


def describe_head(repo: Path, head_ref: str | None) -> str:
    if head_ref:
        return head_ref
    commit = _git(repo, "rev-parse", "--short", "HEAD")
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=normal"))
    return f"working tree (HEAD {commit}{', with uncommitted changes' if dirty else ''})"


def run(args: argparse.Namespace) -> str:
    cwd = args.repo or Path.cwd()
    repo = Path(_git(cwd, "rev-parse", "--show-toplevel"))
    user_context = parse_context(args.context)
    base_ref = args.base or default_base(repo)
    base_commit = resolve_commit(repo, base_ref)
    if base_commit is None:
        raise DiffError(
            f"base ref {base_ref!r} does not exist in {repo} "
            "(fetch it first, e.g. `git fetch origin main`)"
        )
    head_commit = None
    if args.head:
        head_commit = resolve_commit(repo, args.head)
        if head_commit is None:
            raise DiffError(f"head ref {args.head!r} does not exist in {repo}")
    cdk = find_cdk(repo)
    base_label = f"{base_ref} ({base_commit[:7]})"
    head_label = describe_head(repo, args.head)
    if head_commit:
        head_label = f"{head_label} ({head_commit[:7]})"

    with tempfile.TemporaryDirectory(prefix="offline-diff-") as tmp, ExitStack() as trees:
        work = Path(tmp)
        base_src = trees.enter_context(worktree(repo, base_commit, work / "base"))
        head_src = repo
        if head_commit:
            head_src = trees.enter_context(worktree(repo, head_commit, work / "head"))
        with ThreadPoolExecutor(max_workers=2) as pool:
            base_job = pool.submit(
                synthesize, base_src, work / "base.out", user_context, base_label
            )
            head_job = pool.submit(
                synthesize, head_src, work / "head.out", user_context, head_label
            )
            base, head = base_job.result(), head_job.result()
        report = compare(base, head, cdk, work, args.stacks)

    context_note = " ".join(f"-c {k}={v}" for k, v in user_context.items()) or "cdk.json defaults"
    header = [
        f"Offline cdk diff: {head_label} against {base_label}",
        f"Context: {context_note}; templates compared, no AWS account consulted; "
        "asset bundling skipped on both sides.",
    ]
    return "\n\n".join(["\n".join(header), *report.sections, report.summary()]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        output = run(args)
    except DiffError as exc:
        print(f"offline_diff: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
