"""The builds `make test` starts in the background (scripts/background-builds.sh) and the tiers
that need their results share one lock per kind of build: the second waits for the first, then
finds its work done. Checked with the lock held by the test and builds that have nothing to do."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
CLUSTER_SCRIPT = (SCRIPTS / "local-cluster.sh").read_text()
CLUSTER_CONFTEST = (ROOT / "tests" / "cluster" / "conftest.py").read_text()


@contextmanager
def held(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def waits_for(lock: Path, command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Starts `command` while `lock` is held and checks it is still waiting after 2 s."""
    with held(lock):
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(2)
        assert process.poll() is None, f"{command} did not wait for {lock}"
    return process


def pinned(name: str) -> str:
    found = re.search(rf"^{name}=(\S+)$", CLUSTER_SCRIPT, re.MULTILINE)
    assert found, name
    return found.group(1)


def cache_folder(variable: str) -> str:
    """The cache folder local-cluster.sh names in `variable=$cache/...`, its versions filled in."""
    releases = (ROOT / "helm-releases.env").read_text()
    kuberay = re.search(r"^KUBERAY_OPERATOR_VERSION=(\S+)$", releases, re.MULTILINE)
    operator = re.search(r"^PROMETHEUS_OPERATOR_VERSION=(\S+)$", releases, re.MULTILINE)
    assert kuberay
    assert operator
    versions = {
        "KUBERAY_VERSION": "v" + kuberay.group(1),
        "PROMETHEUS_OPERATOR_VERSION": operator[1],
    }
    found = re.search(rf"^{variable}=\$cache/(\S+)$", CLUSTER_SCRIPT, re.MULTILINE)
    assert found, variable
    return re.sub(r"\$([A-Z_]+)", lambda m: versions.get(m[1]) or pinned(m[1]), found.group(1))


def one_module_programs() -> dict[str, str]:
    """The binaries local-cluster.sh builds from its one module (its `programs`), each with
    its package."""
    found = re.search(r"^programs=\(\n(.*?)^\)$", CLUSTER_SCRIPT, re.MULTILINE | re.DOTALL)
    assert found
    return dict(line.strip().split("=", 1) for line in found.group(1).splitlines())


def built_cache(cache: Path) -> None:
    """Every program and CRD folder of the cluster already in the cache: `build` has nothing
    to build."""
    programs = [
        *(f"{cache_folder('programs_bin')}/{name}" for name in one_module_programs()),
        f"{cache_folder('coredns_bin')}/coredns",
        f"{cache_folder('traefik_bin')}/traefik",
    ]
    for program in programs:
        path = cache / program
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    for crds in ("kuberay_crds", "gateway_api_crds", "prometheus_operator_crds"):
        (cache / cache_folder(crds)).mkdir(parents=True)


def without_go(tmp_path: Path, cache: Path) -> dict[str, str]:
    """The environment of a cluster script whose `go` records its arguments and fails (but
    for `go env`)."""
    fake_go = tmp_path / "bin" / "go"
    fake_go.parent.mkdir(exist_ok=True)
    fake_go.write_text(
        f'#!/bin/sh\necho "$*" >>"{tmp_path}/go-calls"\n[ "$1" = env ] && exit 0\nexit 1\n'
    )
    fake_go.chmod(0o755)
    return os.environ | {
        "SFMLOPS_CLUSTER_CACHE": str(cache),
        "SFMLOPS_CLUSTER_DIR": str(tmp_path / "state"),
        "PATH": f"{fake_go.parent}:{os.environ['PATH']}",
    }


def test_the_cluster_programs_build_waits_for_a_running_one(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    built_cache(cache)
    env = without_go(tmp_path, cache)

    process = waits_for(cache / "build.lock", [str(SCRIPTS / "local-cluster.sh"), "build"], env)

    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "building" not in stderr


def build_without_go(tmp_path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """`local-cluster.sh build` on CACHE with the stand-in `go` of `without_go`."""
    return subprocess.run(
        [str(SCRIPTS / "local-cluster.sh"), "build"],
        env=without_go(tmp_path, cache),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cluster_build_removes_what_other_versions_left_in_its_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    built_cache(cache)
    current = sorted(str(path.relative_to(cache)) for path in cache.rglob("*"))
    # Earlier pins and keys (Traefik and CoreDNS before their trimmed builds, a KubeRay CRD
    # version), the folders of Kubernetes, etcd and the add-ons built from modules of their own,
    # a build cut short; and a folder the script does not name, which stays.
    old = [
        "traefik-v3.6.12/traefik",
        "coredns-v1.14.7/coredns",
        "kubernetes-v1.34.4/kubelet",
        "etcd-v3.6.8/etcd",
        "addons-coredns-v1.14.7-kuberay-v1.5.1-local-path-v0.0.30-crictl-v1.34.0/crictl",
        "kubernetes-v1.33.1.tmp/kubelet",
        "crds/kuberay-v1.4.0/ray.io_rayclusters.yaml",
    ]
    for name in [*old, "notes/kept.txt"]:
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / name).write_text("")

    result = build_without_go(tmp_path, cache)

    assert result.returncode == 0, result.stderr
    left = sorted(str(path.relative_to(cache)) for path in cache.rglob("*"))
    assert left == sorted([*current, "build.lock", "notes", "notes/kept.txt"])
    assert result.stderr.count("removing") == len(old)


def test_the_cluster_build_makes_crictl_first_from_the_one_module(tmp_path: Path) -> None:
    """The image preload waits for crictl: the first `go build` makes it alone, into the
    programs' folder, before the rest compiles (here the second `go build` fails)."""
    cache = tmp_path / "cache"
    staging = tmp_path / "kubernetes.mod"
    staging.write_text("replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n)\n")
    # `go mod download -json` gives Kubernetes' go.mod; the first `go build` writes its
    # binary into the folder after -o, the second fails.
    fake_go = tmp_path / "building-go" / "go"
    fake_go.parent.mkdir()
    fake_go.write_text(
        f"""#!/bin/bash
echo "$*" >>"{tmp_path}/go-calls"
case "$1" in
env | mod) [ "$2" = download ] && printf '\\t"GoMod": "%s",\\n' "{staging}"; exit 0 ;;
build) [ -e "{tmp_path}/built" ] && exit 1; touch "{tmp_path}/built" ;;
esac
while [ "$1" != -o ]; do shift; done
touch "$2/${{3##*/}}" && chmod +x "$2/${{3##*/}}"
"""
    )
    fake_go.chmod(0o755)
    env = without_go(tmp_path, cache) | {"PATH": f"{fake_go.parent}:{os.environ['PATH']}"}

    result = subprocess.run(
        [str(SCRIPTS / "local-cluster.sh"), "build"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    builds = [
        line
        for line in (tmp_path / "go-calls").read_text().splitlines()
        if line.startswith("build")
    ]
    programs = one_module_programs()
    assert builds[0].endswith(f" {programs['crictl']}")
    assert programs["crictl"] not in builds[1]
    assert programs["kubelet"] in builds[1]
    folder = cache / cache_folder("programs_bin")
    assert sorted(path.name for path in folder.iterdir()) == ["crictl"]
    # The module pins every program's version and takes Kubernetes' staging modules at the
    # versions published for them.
    module = (cache / "src" / "programs" / "go.mod").read_text()
    for module_path, variable in (
        ("k8s.io/kubernetes", "KUBERNETES_VERSION"),
        ("go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
        ("github.com/rancher/local-path-provisioner", "LOCAL_PATH_PROVISIONER_VERSION"),
        ("sigs.k8s.io/cri-tools", "CRI_TOOLS_VERSION"),
    ):
        assert f"\t{module_path} {pinned(variable)}\n" in module
    kuberay = cache_folder("kuberay_crds").removeprefix("crds/kuberay-")
    assert f"\tgithub.com/ray-project/kuberay/ray-operator {kuberay}\n" in module
    staging_version = "v0." + pinned("KUBERNETES_VERSION").removeprefix("v1.")
    assert f"replace k8s.io/api => k8s.io/api {staging_version}\n" in module


def test_a_preload_waits_while_a_build_may_still_make_crictl(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    command = [str(SCRIPTS / "local-cluster.sh"), "preload", "localhost/nope:tag"]
    env = without_go(tmp_path, cache)
    lock = cache / "build.lock"
    with held(lock):
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(3)
        assert process.poll() is None, "preload did not wait for the running build"
    # The build ended without crictl: nothing to load with, nothing loaded, no error.
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "waiting for the running build to make crictl" in stderr
    assert "nothing loaded" in stderr

    # No build runs: no wait.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=True)
    assert "waiting" not in again.stderr
    assert "nothing loaded" in again.stderr


def test_an_image_build_waits_for_a_running_one(tmp_path: Path) -> None:
    cache = tmp_path / "images"
    env = os.environ | {"SFMLOPS_IMAGE_CACHE": str(cache), "SFMLOPS_CONTAINER_ENGINE": "podman"}
    env.pop("SFMLOPS_IMAGES_LOCKED", None)

    # A name no image has: once through the lock, the script stops before building anything.
    process = waits_for(cache / "build.lock", [str(SCRIPTS / "images.sh"), "tag", "nope"], env)

    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "no image named nope" in stderr


def test_a_compose_stand_in_build_waits_for_a_running_image_build(tmp_path: Path) -> None:
    cache = tmp_path / "images"
    env = os.environ | {"SFMLOPS_IMAGE_CACHE": str(cache)}
    env.pop("SFMLOPS_IMAGES_LOCKED", None)

    command = [str(SCRIPTS / "compose-images.sh"), "nope"]
    process = waits_for(cache / "build.lock", command, env)

    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "no stand-in named nope" in stderr


def test_make_test_starts_the_background_builds_before_the_main_suite() -> None:
    # -o: the prerequisites count as made, so only the recipe itself is printed.
    done = [
        "dev",
        "system-deps",
        "container-tools",
        "deploy-tools",
        "lint",
        "lint-deploy",
        "airflow",
    ]
    skip = [flag for target in done for flag in ("-o", target)]
    recipe = subprocess.run(
        ["make", "-n", "test", *skip], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    background = next(i for i, line in enumerate(recipe) if "background-builds.sh" in line)
    suite = next(i for i, line in enumerate(recipe) if "-m pytest" in line)
    assert background < suite


def test_the_cluster_tier_waits_for_the_programs_before_its_tests() -> None:
    """A background build still running is waited for outside the tier's tests (whose set-up
    has a time limit) and the wait is printed."""
    recipe = subprocess.run(
        ["make", "-n", "cluster-test", "-o", "images", "-o", "dev", "-o", "deploy-tools"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    build = next(i for i, line in enumerate(recipe) if "local-cluster.sh build" in line)
    suite = next(i for i, line in enumerate(recipe) if "-m pytest tests/cluster" in line)
    assert build < suite
    assert "were ready after" in recipe[build + 1]


def start_chains(tmp_path: Path, build: str) -> Path:
    """Runs a copy of background-builds.sh whose builds are the script `build`; its scripts."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "background-builds.sh").write_text((SCRIPTS / "background-builds.sh").read_text())
    for name in ("images.sh", "compose-images.sh", "local-cluster.sh"):
        (scripts / name).write_text(build)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("podman", "go"):
        (fake_bin / tool).write_text("#!/bin/sh\n")
    for path in [*scripts.iterdir(), *fake_bin.iterdir()]:
        path.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    subprocess.run(
        ["bash", str(scripts / "background-builds.sh"), "tag"], env=env, check=True, timeout=30
    )
    return scripts


def chains_at_their_level(tmp_path: Path) -> None:
    """Waits until each chain has left the nice-0 scheduler group setsid gave it (its first
    step); returns at once where the kernel has no such groups or a chain has ended."""
    deadline = time.monotonic() + 30
    for pid_file in (tmp_path / "test-artifacts").glob("background-*.pid"):
        group = Path(f"/proc/{pid_file.read_text().strip()}/autogroup")
        while True:
            try:
                if not group.read_text().strip().endswith("nice 0"):
                    break
            except OSError:
                break
            assert time.monotonic() < deadline, f"{pid_file.name}: its level never set"
            time.sleep(0.05)


def recorded(out: Path) -> list[str]:
    """The two lines a build recorded (its nice, its scheduler group), once written."""
    deadline = time.monotonic() + 30
    while not (out.exists() and len(out.read_text().splitlines()) == 2):
        assert time.monotonic() < deadline, f"{out.name} never written"
        time.sleep(0.2)
    return out.read_text().splitlines()


def test_the_image_chain_runs_before_the_cluster_programs_and_both_below_the_suite(
    tmp_path: Path,
) -> None:
    """Each chain runs at its nice level, its scheduler group too where the kernel groups by
    session: images at 10 (needed first), the cluster's programs at 19. Run on a copy of the
    script whose builds only record their priority."""
    # One record per script and command: local-cluster.sh runs in both chains (build, preload).
    record = (
        '#!/bin/sh\n{ nice; cat /proc/self/autogroup 2>/dev/null || echo none; } > "$0.$1.out"\n'
    )
    scripts = start_chains(tmp_path, record)
    levels = {}
    # `nice -n` adds to the caller's own level (a suite run under `nice -n 19` stays at 19);
    # the scheduler group's level is set as it is.
    base = os.nice(0)
    for name, group_level in (
        ("images.sh.build", 10),
        ("local-cluster.sh.preload", 10),
        ("local-cluster.sh.build", 19),
    ):
        expected = min(19, base + group_level)
        nice, group = recorded(scripts / f"{name}.out")
        levels[name] = int(nice)
        assert int(nice) == expected, name
        if group != "none":
            assert group.endswith(f"nice {group_level}"), (name, group)
    assert levels["images.sh.build"] < levels["local-cluster.sh.build"] or base + 10 >= 19


def test_once_the_main_suite_ends_the_chains_are_promoted_to_the_tiers_level(
    tmp_path: Path,
) -> None:
    """`--promote` (make test runs it after the main suite) puts each chain still running in a
    scheduler group at nice 0, so that other low-priority work cannot starve the builds the last
    tiers wait for. Needs the right to raise a priority, which CI's root has."""
    if os.geteuid() != 0:
        pytest.skip("raising a scheduler group's priority needs root")
    # Each build waits for the go-ahead, then records its priority.
    go_ahead = tmp_path / "go-ahead"
    build = (
        f"#!/bin/sh\nwhile [ ! -e {go_ahead} ]; do sleep 0.1; done\n"
        '{ nice; cat /proc/self/autogroup 2>/dev/null || echo none; } > "$0.$1.out"\n'
    )
    scripts = start_chains(tmp_path, build)
    # make test promotes minutes after the start; here a promotion could come before a chain has
    # set its own level, which would then undo it.
    chains_at_their_level(tmp_path)

    promoted = subprocess.run(
        ["bash", str(scripts / "background-builds.sh"), "--promote"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    go_ahead.touch()

    assert "images now at nice 0" in promoted.stdout
    assert "cluster-programs now at nice 0" in promoted.stdout
    for name in ("images.sh.build", "local-cluster.sh.build"):
        _, group = recorded(scripts / f"{name}.out")
        if group != "none":
            assert group.endswith("nice 0"), (name, group)


def test_the_images_chain_preloads_the_images_the_cluster_tier_deploys() -> None:
    chains = (SCRIPTS / "background-builds.sh").read_text()
    preloaded = re.search(r'^cluster_images="([^"]*)"$', chains, re.MULTILINE)
    deployed = re.search(r"^IMAGES = \[([^]]*)\]$", CLUSTER_CONFTEST, re.MULTILINE)
    assert preloaded
    assert deployed
    assert preloaded.group(1).split() == re.findall(r'"([^"]+)"', deployed.group(1))
    stand_ins = re.search(r"^preload\+=' \$\(scripts/compose-images.sh ([^)]*)\)'$", chains, re.M)
    loaded = re.search(r"^STAND_INS = \[([^]]*)\]$", CLUSTER_CONFTEST, re.MULTILINE)
    assert stand_ins
    assert loaded
    assert stand_ins.group(1).split() == re.findall(r'"([^"]+)"', loaded.group(1))
