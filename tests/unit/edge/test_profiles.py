"""Device profiles: the registry, overrides, bad names and values; cgroup detection on a folder tree."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from inferno.edge import _limits
from inferno.edge._profile_inputs import tile
from inferno.edge.profiles import (
    CUSTOM,
    PROFILES,
    Limits,
    Profile,
    ProfileResult,
    get_profile,
    make_profile,
    resolve_profiles,
)
from inferno.errors import ConfigError


def test_registry_has_the_issue_profiles() -> None:
    small, medium, tiny = PROFILES["edge-small"], PROFILES["edge-medium"], PROFILES["edge-tiny"]
    assert (small.threads, small.memory_mb) == (1, 512)
    assert (medium.threads, medium.memory_mb) == (2, 2048)
    assert (tiny.threads, tiny.memory_mb) == (1, 256)
    assert all(name == p.name and p.description for name, p in PROFILES.items())


def test_profile_is_frozen_and_cores_default_to_threads() -> None:
    profile = get_profile("edge-medium")
    with pytest.raises(Exception, match="frozen"):
        profile.threads = 4  # type: ignore[misc]
    assert profile.cores == 2.0
    assert make_profile(name="x", threads=2, cpu_quota=0.5).cores == 0.5


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        get_profile("edge-huge")
    message = str(caught.value)
    assert "'edge-huge'" in message and all(name in message for name in PROFILES)


def test_comma_separated_and_repeated_names_in_order_without_duplicates() -> None:
    names = [p.name for p in resolve_profiles(["edge-small, edge-tiny", "edge-medium", "edge-small"])]
    assert names == ["edge-small", "edge-tiny", "edge-medium"]


def test_overrides_apply_to_every_profile_and_rename_it() -> None:
    profiles = resolve_profiles(["edge-small,edge-medium"], threads=4, cpu_quota=1.5)
    assert [(p.threads, p.memory_mb, p.cpu_quota) for p in profiles] == [(4, 512, 1.5), (4, 2048, 1.5)]
    assert profiles[0].name == "edge-small(threads=4,cpu_quota=1.5)"
    assert PROFILES["edge-small"].threads == 1  # the registry is untouched
    assert get_profile("edge-small").with_overrides() is PROFILES["edge-small"]


def test_overrides_alone_make_a_custom_profile() -> None:
    (custom,) = resolve_profiles([], memory_mb=300)
    assert (custom.name, custom.threads, custom.memory_mb, custom.cpu_quota) == (CUSTOM, 1, 300, None)


def test_nothing_asked_for_is_an_error() -> None:
    with pytest.raises(ConfigError, match="--profile: expected a profile name"):
        resolve_profiles(["", " "])


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [({"threads": 0}, "--threads"), ({"memory_mb": 8}, "--memory-mb"), ({"cpu_quota": -1.0}, "--cpu-quota")],
)
def test_bad_override_names_the_flag_and_value(overrides: dict[str, float], flag: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_profiles(["edge-small"], **overrides)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(flag) and repr(next(iter(overrides.values()))) in message


def test_tile_repeats_rows_in_order_and_cuts() -> None:
    rows = np.arange(6).reshape(3, 2)
    assert tile(rows, 7)[:, 0].tolist() == [0, 2, 4, 0, 2, 4, 0]
    assert tile(rows, 2).tolist() == [[0, 1], [2, 3]]


def test_result_to_dict_is_json() -> None:
    limits = Limits(threads=1, memory_mb=512, memory_mechanism="rlimit", cpu_quota=None,
                    cpu_mechanism="affinity", cpus=(0,))
    result = ProfileResult(profile=PROFILES["edge-small"], model="m", batch=1, fits=False,
                           reason="does not fit", limits=limits, notes=("a",))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["profile"]["memory_mb"] == 512 and data["limits"]["cpus"] == [0]
    assert data["fits"] is False and data["notes"] == ["a"]
    assert "512 MB rlimit" in limits.describe() and "pinned to CPU 0" in limits.describe()


def test_pinned_cpus_whole_cores_from_the_allowed_set() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    cpus, note = _limits.pinned_cpus(1)
    if len(allowed) > 1:
        assert cpus == allowed[:1] and note is None
    else:
        assert cpus is None
    cpus, note = _limits.pinned_cpus(0.5)
    assert note is not None and "0.5" in note
    cpus, note = _limits.pinned_cpus(len(allowed) + 1)
    assert cpus is None and note is not None and "may use only" in note


def _tree(root: Path, cgroup: str, subtree: str) -> Path:
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cgroup").write_text(f"0::{cgroup}\n")
    base = root / "fs" / cgroup.lstrip("/")
    base.mkdir(parents=True)
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.subtree_control").write_text(subtree)
    return base


def test_delegated_cgroup_when_memory_is_handed_to_children(tmp_path: Path) -> None:
    base = _tree(tmp_path, "/user.slice/me", "cpu memory\n")
    found = _limits.delegated_cgroup(tmp_path / "fs", tmp_path / "proc" / "cgroup")
    assert found == (base, frozenset({"cpu", "memory"}))


def test_no_cgroup_without_memory_delegation_or_on_cgroup_v1(tmp_path: Path) -> None:
    _tree(tmp_path, "/", "pids\n")
    assert _limits.delegated_cgroup(tmp_path / "fs", tmp_path / "proc" / "cgroup") is None
    (tmp_path / "proc" / "cgroup").write_text("4:memory:/x\n1:cpu:/\n")  # v1 only
    assert _limits.delegated_cgroup(tmp_path / "fs", tmp_path / "proc" / "cgroup") is None


def test_child_cgroup_writes_limits_reads_stats_and_removes_itself(tmp_path: Path) -> None:
    group = _limits.ChildCgroup.create(tmp_path, frozenset({"memory", "cpu"}), 512, 0.5)
    assert (group.path / "memory.max").read_text() == str(512 * 2**20)
    assert (group.path / "cpu.max").read_text() == "50000 100000" and group.cpu
    (group.path / "memory.peak").write_text(str(100 * 2**20))
    (group.path / "memory.events").write_text("oom 1\noom_kill 1\n")
    group.read_stats()
    assert group.peak_mb == 100 and group.oom_kills == 1
    for child in group.path.iterdir():  # cgroupfs drops its files itself; a plain folder does not
        child.unlink()
    group.remove()
    assert not group.path.exists()


def test_child_cgroup_without_cpu_controller_leaves_the_quota_to_affinity(tmp_path: Path) -> None:
    group = _limits.ChildCgroup.create(tmp_path, frozenset({"memory"}), 256, 1.0)
    assert not group.cpu and not (group.path / "cpu.max").exists()


def test_profile_is_a_pydantic_model() -> None:
    assert Profile.model_json_schema()["properties"]["threads"]["minimum"] == 1
