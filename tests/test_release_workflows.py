"""The GitHub workflows, which cannot run here: what they run, when, and with which permissions. .ci/run validates
them against GitHub's workflow schema (check-jsonschema); these tests hold what the schema cannot know."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support import REPO

WORKFLOWS = REPO / ".github" / "workflows"
# What every step that builds the distributions runs: one script, so that the release builds and checks exactly
# as .ci/run does.
BUILD_DIST = "scripts/build-dist.sh"


def load(name: str) -> dict[str, Any]:
    workflow: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in steps(job))


def uses(job: dict[str, Any]) -> list[str]:
    return [str(step["uses"]) for step in steps(job) if "uses" in step]


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    found = [step for step in steps(job) if str(step.get("uses", "")).split("@")[0] == action]
    assert len(found) == 1, f"{action}: {len(found)} steps"
    return found[0]


def needs(job: dict[str, Any]) -> set[str]:
    value = job.get("needs", [])
    return {value} if isinstance(value, str) else set(value)


def upstream(jobs: dict[str, dict[str, Any]], name: str) -> set[str]:
    """Every job that must finish before `name` starts."""
    seen: set[str] = set()
    todo = list(needs(jobs[name]))
    while todo:
        job = todo.pop()
        if job not in seen:
            seen.add(job)
            todo += needs(jobs[job])
    return seen


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load("ci.yml")


@pytest.fixture(scope="module")
def release() -> dict[str, Any]:
    return load("release.yml")


# ---- ci.yml


def test_ci_runs_on_push_and_pull_request_and_for_the_release(ci: dict[str, Any]) -> None:
    assert {"push", "pull_request", "workflow_call"} <= set(ci["on"])


def test_ci_runs_exactly_the_readme_command(ci: dict[str, Any]) -> None:
    (job,) = ci["jobs"].values()
    commands = [line.strip() for line in runs(job).splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands[-1] == "bash .ci/run"
    assert "```sh\nbash .ci/run\n```" in (REPO / "README.md").read_text(encoding="utf-8")
    assert job["timeout-minutes"] <= 90
    assert ci["permissions"] == {"contents": "read"}


def test_ci_machine_is_the_fresh_debian_ci_run_expects(ci: dict[str, Any]) -> None:
    """Debian with python3, pip, gcc and git (.ci/run installs the rest), privileged for podman."""
    (job,) = ci["jobs"].values()
    assert job["container"]["image"].startswith("debian:")
    assert "--privileged" in job["container"]["options"]
    prepare = runs(job).split("bash .ci/run")[0]
    for package in ("python3", "python3-pip", "python3-venv", "gcc", "git"):
        assert re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", prepare), package
    assert uses(job)[0].startswith("actions/checkout@")


# ---- release.yml


def test_release_runs_on_version_tags_only(release: dict[str, Any]) -> None:
    assert release["on"] == {"push": {"tags": ["v*"]}}


def test_release_permissions_are_least_by_default(release: dict[str, Any]) -> None:
    assert release["permissions"] == {"contents": "read"}
    for name, job in release["jobs"].items():
        granted = job.get("permissions", {})
        writes = {scope for scope, level in granted.items() if level == "write"}
        allowed = {"pypi": {"id-token"}, "image": {"packages"}, "release": {"contents"}}.get(name, set())
        assert writes <= allowed, f"job {name} may write {writes - allowed}"


def test_nothing_is_published_before_the_tag_check_and_the_full_ci(release: dict[str, Any]) -> None:
    jobs = release["jobs"]
    assert "scripts/check-release-tag.py \"$GITHUB_REF_NAME\"" in runs(jobs["tag"])
    assert 'scripts/changelog-entry.py "${GITHUB_REF_NAME#v}"' in runs(jobs["tag"])
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    for publisher in ("pypi", "image", "release"):
        assert {"tag", "test", "dist"} <= upstream(jobs, publisher), publisher
    assert {"pypi", "image"} <= needs(jobs["release"]), "the release is announced once both are published"


def test_release_builds_the_distributions_as_ci_run_does(release: dict[str, Any]) -> None:
    ci_run = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    build = rf"^PYTHON=\.venv-release/bin/python bash {re.escape(BUILD_DIST)} \"\$dist\"$"
    assert re.search(build, ci_run, re.MULTILINE)
    dist = release["jobs"]["dist"]
    build_steps = [step for step in steps(dist) if BUILD_DIST in str(step.get("run", ""))]
    assert len(build_steps) == 1
    assert build_steps[0]["run"].strip() == f"bash {BUILD_DIST} dist"
    assert build_steps[0]["env"] == {"PYTHON": "python"}
    # The tools it needs, and nothing else builds or uploads in another way.
    installed = runs(dist)
    for tool in ("build", "twine", "check-wheel-contents"):
        assert re.search(rf"pip install [^\n]*\b{tool}\b", installed), tool
    script = (REPO / BUILD_DIST).read_text(encoding="utf-8")
    for command in ("-m build", "-m twine check --strict", "-m check_wheel_contents", "scripts/check-dist.py",
                    "--demo --once", "--version"):
        assert command in script, command
    for name, job in release["jobs"].items():
        if name != "dist":
            assert "-m build" not in runs(job) and "twine upload" not in runs(job), name


def test_pypi_by_trusted_publishing(release: dict[str, Any]) -> None:
    job = release["jobs"]["pypi"]
    assert job["environment"]["name"] == "pypi"
    assert job["permissions"] == {"id-token": "write"}
    publish = step_using(job, "pypa/gh-action-pypi-publish")
    assert not {"password", "user", "username"} & set(publish.get("with", {})), "trusted publishing takes no secret"
    assert "secrets." not in yaml.safe_dump(job)
    download = step_using(job, "actions/download-artifact")
    assert download["with"]["name"] == "dist"


def test_image_multi_arch_with_provenance_and_the_build_arguments(release: dict[str, Any]) -> None:
    job = release["jobs"]["image"]
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    for action in ("docker/setup-qemu-action", "docker/setup-buildx-action", "docker/metadata-action"):
        step_using(job, action)
    login = step_using(job, "docker/login-action")["with"]
    assert login["registry"] == "ghcr.io"
    assert login["password"] == "${{ secrets.GITHUB_TOKEN }}"
    build = step_using(job, "docker/build-push-action")["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["provenance"] in (True, "true", "mode=max")
    assert build["tags"] == "${{ steps.meta.outputs.tags }}"
    args = dict(line.split("=", 1) for line in build["build-args"].split("\n") if line.strip())
    assert args == {
        "VERSION": "${{ steps.args.outputs.version }}",
        "REVISION": "${{ github.sha }}",
        "CREATED": "${{ steps.args.outputs.created }}",
    }
    made = runs(job)
    assert 'version=${GITHUB_REF_NAME#v}' in made
    assert "created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" in made


def test_github_release_notes_are_the_changelog_entry(release: dict[str, Any]) -> None:
    job = release["jobs"]["release"]
    assert job["permissions"] == {"contents": "write"}
    made = runs(job)
    notes = re.search(r'scripts/changelog-entry\.py "\$\{GITHUB_REF_NAME#v\}" >"(?P<file>[^"]+)"', made)
    assert notes, made
    assert f'--notes-file "{notes["file"]}"' in made
    assert 'gh release create "$GITHUB_REF_NAME"' in made


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_actions_are_pinned_to_a_major_version_at_least(name: str) -> None:
    workflow = load(name)
    for job in workflow["jobs"].values():
        for action in uses(job):
            ref = action.partition("@")[2]
            assert re.fullmatch(r"(release/)?v\d+(\.\d+)*|[0-9a-f]{40}", ref), f"{name}: {action} is not pinned"
