"""The CRDs the local mode of scripts/deploy.sh installs (KubeRay's, the Prometheus Operator's):
read from the local cluster's cache when it holds them, else from their Go modules downloaded
into a module cache of the run's own, deleted after (Go's default one would keep them).
Run on a copy of the script with kubectl, helm, go and the stand-in builder replaced by programs
that record what they are asked."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.support.deploy import RELEASES, ROOT

KUBERAY = f"kuberay-v{RELEASES['KUBERAY_OPERATOR_VERSION']}"
OPERATOR = f"prometheus-operator-{RELEASES['PROMETHEUS_OPERATOR_VERSION']}"
MONITORING_KINDS = ["servicemonitors", "podmonitors", "prometheusrules"]


def _stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _deploy_local(tmp_path: Path, cache: Path) -> tuple[list[str], list[str]]:
    """`SFMLOPS_RELEASES=local scripts/deploy.sh up` on a cluster without KubeRay's CRDs;
    returns the CRD paths kubectl applied and go's calls (each with its GOMODCACHE)."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "deploy.sh").write_text((ROOT / "scripts" / "deploy.sh").read_text())
    (root / "scripts" / "deploy.sh").chmod(0o755)
    (root / "helm-releases.env").write_text((ROOT / "helm-releases.env").read_text())
    _stub(root / "scripts" / "compose-images.sh", "echo localhost/sfmlops-compose-postgres:key\n")
    stubs, calls = tmp_path / "bin", tmp_path / "calls"
    # kubectl: no CRD installed yet; every other call succeeds.
    _stub(
        stubs / "kubectl",
        f'printf "%s\\n" "kubectl $*" >>"{calls}"\n[ "$1 $2" = "get crd" ] && exit 1\nexit 0\n',
    )
    _stub(stubs / "helm", "exit 0\n")
    # go mod download -json MODULE@VERSION: the module's folder with the CRD files, made under
    # GOMODCACHE as Go would.
    _stub(
        stubs / "go",
        f'printf "%s\\n" "go $* GOMODCACHE=$GOMODCACHE" >>"{calls}"\n'
        'dir="$GOMODCACHE/$4"\n'
        'mkdir -p "$dir/config/crd/bases" "$dir/example/prometheus-operator-crd"\n'
        'printf \'{\\n\\t"Path": "%s",\\n\\t"Dir": "%s",\\n}\\n\' "$4" "$dir"\n',
    )
    home = tmp_path / "home"
    home.mkdir()
    env = os.environ | {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "HOME": str(home),
        "SFMLOPS_RELEASES": "local",
        "SFMLOPS_LOCAL_KAFKA": "0",
        "SFMLOPS_IMAGE_TAG": "tag",
        "SFMLOPS_CLUSTER_CACHE": str(cache),
        "TMPDIR": str(tmp_path),
    }
    for variable in ("GOMODCACHE", "GOCACHE", "GOFLAGS"):
        env.pop(variable, None)
    subprocess.run(
        [str(root / "scripts" / "deploy.sh"), "up"], env=env, check=True, timeout=60, cwd=root
    )
    assert not (home / "go").exists(), "Go's default module cache was used"
    lines = calls.read_text().splitlines()
    applied = [
        line.split(" -f ", 1)[1].split()[0]
        for line in lines
        if line.startswith("kubectl apply") and " -f " in line and " -f -" not in line
    ]
    return applied, [line for line in lines if line.startswith("go ")]


def test_the_crds_come_from_the_local_clusters_cache_without_go(tmp_path: Path) -> None:
    cache = tmp_path / "cluster-cache"
    (cache / "crds" / KUBERAY).mkdir(parents=True)
    (cache / "crds" / OPERATOR).mkdir(parents=True)

    applied, go_calls = _deploy_local(tmp_path, cache)

    assert go_calls == []
    assert applied == [
        str(cache / "crds" / KUBERAY),
        *(
            str(cache / "crds" / OPERATOR / f"monitoring.coreos.com_{k}.yaml")
            for k in MONITORING_KINDS
        ),
    ]


def test_without_the_cache_the_modules_go_to_a_module_cache_deleted_after(tmp_path: Path) -> None:
    applied, go_calls = _deploy_local(tmp_path, tmp_path / "no-cache")

    assert [call.split()[4] for call in go_calls] == [
        f"github.com/ray-project/kuberay/ray-operator@v{RELEASES['KUBERAY_OPERATOR_VERSION']}",
        f"github.com/prometheus-operator/prometheus-operator@{RELEASES['PROMETHEUS_OPERATOR_VERSION']}",
    ]
    module_caches = {re.sub(r".*GOMODCACHE=", "", call) for call in go_calls}
    assert len(module_caches) == 1
    (module_cache,) = module_caches
    assert module_cache.startswith(str(tmp_path)), "a cache of the run's own (in TMPDIR)"
    assert not Path(module_cache).exists(), "deleted when the script ends"
    assert applied[0] == f"{module_cache}/github.com/ray-project/kuberay/ray-operator@v" + (
        f"{RELEASES['KUBERAY_OPERATOR_VERSION']}/config/crd/bases"
    )
    assert all(path.startswith(module_cache) for path in applied)
    assert len(applied) == 1 + len(MONITORING_KINDS)
