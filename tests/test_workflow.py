"""The GitHub Actions workflows: actionlint finds nothing in them, and the pull-request workflow
runs the README's commands, reaches AWS only through OIDC when configured to, and keeps one
diff comment per pull request (its script run by Node against a fake GitHub API)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
PULL_REQUEST = WORKFLOWS / "pull-request.yml"
ACTIONLINT = Path(sys.executable).with_name("actionlint")
MARKER = "<!-- cdk-diff -->"
COMMENT_LIMIT = 65536


def _load(path: Path) -> dict[str, Any]:
    raw: dict[Any, Any] = yaml.safe_load(path.read_text("utf-8"))
    # YAML 1.1 reads the bare key `on` as a boolean.
    return {("on" if key is True else str(key)): value for key, value in raw.items()}


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return _load(PULL_REQUEST)


@pytest.fixture(scope="module")
def job(workflow: dict[str, Any]) -> dict[str, Any]:
    (only,) = workflow["jobs"].values()
    assert isinstance(only, dict)
    return only


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = job["steps"]
    return steps


def _step(job: dict[str, Any], uses: str) -> dict[str, Any]:
    (step,) = [s for s in _steps(job) if s.get("uses", "").startswith(f"{uses}@")]
    return step


def test_actionlint_finds_nothing() -> None:
    """With ShellCheck on PATH (as on GitHub's runners) actionlint checks the scripts too."""
    files = sorted(str(p) for p in [*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    assert files, "no workflow files"
    result = subprocess.run(
        [str(ACTIONLINT), "-oneline", "-no-color", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"actionlint findings:\n{result.stdout}{result.stderr}"


def test_actionlint_is_live(tmp_path: Path) -> None:
    """The check above can fail: an unknown context property and a bad runner label."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request\njobs:\n  x:\n    runs-on: linux-latest\n"
        "    steps:\n      - run: echo ${{ github.no_such_thing }}\n"
    )
    result = subprocess.run(
        [str(ACTIONLINT), "-oneline", "-no-color", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "linux-latest" in result.stdout
    assert "no_such_thing" in result.stdout


def test_runs_on_pull_requests_and_cancels_superseded_runs(workflow: dict[str, Any]) -> None:
    assert "pull_request" in (workflow["on"] if isinstance(workflow["on"], dict) else [])
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.event.pull_request.number" in workflow["concurrency"]["group"]


def test_runs_the_readme_commands_on_full_history(job: dict[str, Any]) -> None:
    runs = [s.get("run", "").strip() for s in _steps(job)]
    assert "make test" in runs
    assert "make synth" in runs
    assert runs.index("make test") < runs.index("make synth")
    assert _step(job, "actions/checkout")["with"]["fetch-depth"] == 0
    python = _step(job, "actions/setup-python")["with"]
    assert (python["python-version"], python["cache"]) == ("3.11", "pip")
    node = _step(job, "actions/setup-node")["with"]
    assert (node["node-version"], node["cache"]) == ("22", "npm")


def test_permissions_are_the_least_needed(workflow: dict[str, Any], job: dict[str, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    assert job["permissions"] == {
        "contents": "read",
        "id-token": "write",
        "pull-requests": "write",
    }


def test_aws_only_through_oidc_and_only_when_configured(job: dict[str, Any]) -> None:
    online = job["env"]["DIFF_ONLINE"]
    assert "vars.AWS_DIFF_ROLE_ARN != ''" in online
    assert "vars.AWS_REGION != ''" in online
    # Forks get no variables and no OIDC token: they take the offline diff.
    assert "github.event.pull_request.head.repo.full_name == github.repository" in online
    credentials = _step(job, "aws-actions/configure-aws-credentials")
    assert credentials["if"] == "env.DIFF_ONLINE == 'true'"
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DIFF_ROLE_ARN }}"
    assert credentials["with"]["aws-region"] == "${{ vars.AWS_REGION }}"
    assert not {"aws-access-key-id", "aws-secret-access-key"} & credentials["with"].keys()
    assert "secrets." not in PULL_REQUEST.read_text()


def test_diff_is_online_or_offline(job: dict[str, Any]) -> None:
    (diff,) = [s for s in _steps(job) if s.get("id") == "diff"]
    script = diff["run"]
    online, offline = script.split("\nelse\n")
    assert 'if [ "$DIFF_ONLINE" = true ]' in online
    assert re.search(r"cdk diff .*--method=template", online)
    assert "make " in offline
    assert 'diff BASE="origin/$BASE_REF"' in offline
    assert diff["env"]["BASE_REF"] == "${{ github.base_ref }}"
    names = [s.get("name", s.get("uses", "")) for s in _steps(job)]
    assert names.index("Configure AWS credentials (OIDC)") < names.index("cdk diff")


def test_actions_are_pinned_by_major_version(job: dict[str, Any]) -> None:
    uses = [s["uses"] for s in _steps(job) if "uses" in s]
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", ref), ref


# The comment step's script, run as actions/github-script runs it (an async function body).
_HARNESS = r"""
const fs = require('fs');
const [scriptPath, existingPath] = process.argv.slice(2);
const existing = JSON.parse(fs.readFileSync(existingPath, 'utf8'));
const calls = [];
const github = {
  paginate: async (method, params) => { calls.push(['list', params]); return existing; },
  rest: { issues: {
    listComments: () => { throw new Error('called without paginate'); },
    updateComment: async (params) => { calls.push(['update', params]); },
    createComment: async (params) => { calls.push(['create', params]); },
  } },
};
const context = {
  repo: { owner: 'octo', repo: 'llm' },
  payload: { pull_request: { number: 7, head: { sha: 'abcdef0123456789' } } },
  serverUrl: 'https://github.com',
  runId: 42,
};
const AsyncFunction = (async () => {}).constructor;
new AsyncFunction('github', 'context', 'require', fs.readFileSync(scriptPath, 'utf8'))(
  github, context, require,
).then(() => console.log(JSON.stringify(calls)));
"""


def _comment(
    job: dict[str, Any], tmp_path: Path, diff: str, existing: list[dict[str, Any]]
) -> list[list[Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    step = _step(job, "actions/github-script")
    (tmp_path / "script.js").write_text(step["with"]["script"])
    (tmp_path / "harness.js").write_text(_HARNESS)
    (tmp_path / "existing.json").write_text(json.dumps(existing))
    (tmp_path / "diff.txt").write_text(diff)
    env = {
        "PATH": str(Path(node).parent),
        "DIFF_FILE": str(tmp_path / "diff.txt"),
        "DIFF_MODE": "offline, against origin/main",
        "DIFF_OUTCOME": "success",
    }
    result = subprocess.run(
        [node, "harness.js", "script.js", "existing.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    calls: list[list[Any]] = json.loads(result.stdout)
    assert calls[0] == [
        "list",
        {"owner": "octo", "repo": "llm", "issue_number": 7, "per_page": 100},
    ]
    return calls[1:]


def test_comment_is_created_then_updated_in_place(job: dict[str, Any], tmp_path: Path) -> None:
    diff = "Stack LlmServing-dev-Gateway\nThere were no differences\n"
    ((verb, params),) = _comment(job, tmp_path, diff, [])
    assert verb == "create"
    assert params["issue_number"] == 7
    assert params["body"].startswith(MARKER)
    assert "### cdk diff (offline, against origin/main)" in params["body"]
    assert f"```\n{diff}\n```" in params["body"]

    existing = [
        {"id": 1, "user": {"login": "someone"}, "body": f"quoting {MARKER}"},
        {"id": 2, "user": {"login": "github-actions[bot]"}, "body": "another bot comment"},
        {"id": 3, "user": {"login": "github-actions[bot]"}, "body": f"{MARKER}\nold diff"},
    ]
    ((verb, params),) = _comment(job, tmp_path, diff, existing)
    assert verb == "update"
    assert params["comment_id"] == 3


def test_long_diff_is_truncated_to_the_comment_limit(job: dict[str, Any], tmp_path: Path) -> None:
    diff = "".join(f"[~] line {i} with ``` fences and ü\n" for i in range(10_000))
    ((verb, params),) = _comment(job, tmp_path, diff, [])
    body: str = params["body"]
    assert verb == "create"
    assert len(body) <= COMMENT_LIMIT
    assert body.startswith(MARKER)
    assert "Truncated: the whole diff is the run's `cdk-diff` artifact." in body
    # The fence is longer than any backtick run in the diff, so the diff cannot close it.
    assert "\n````\n[~] line 0 with" in body
    assert "\n…\n````\n\nTruncated" in body
