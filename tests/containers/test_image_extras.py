"""Each image carries the extras of its process only (pyproject.toml, images/sfmlops/Dockerfile):
the API, dashboard and producer images run their commands without Spark, Prophet or a JRE, and
the images that need those have them.

Needs the images of `make images`; `make container-test` builds what is missing.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.containers import ENGINE_ENV, engine, image_of

pytestmark = pytest.mark.containers

# Run inside the image: which of the heavy modules import, whether a JRE is on the PATH, and
# whether the image's own command loads (its CLI imports every command module).
PROBE = """
import importlib, json, shutil, subprocess
found = {}
for module in ("pyspark", "prophet", "ray", "streamlit"):
    try:
        importlib.import_module(module)
        found[module] = True
    except ModuleNotFoundError:
        found[module] = False
found["java"] = shutil.which("java") is not None
found["cli"] = subprocess.run(["sfmlops", "--help"], capture_output=True).returncode == 0
print(json.dumps(found))
"""

# Image -> what it must (True) and must not (False) have.
EXPECTED = {
    "forecast-api": {"pyspark": False, "prophet": False, "java": False, "ray": True},
    "web-ui": {"pyspark": False, "prophet": False, "java": False, "ray": False, "streamlit": True},
    "data-producer": {"pyspark": False, "prophet": False, "java": False, "ray": False},
    "stream-processor": {"pyspark": True, "prophet": True, "java": True, "ray": True},
}


@pytest.mark.parametrize("image_name", sorted(EXPECTED))
def test_an_image_has_the_extras_of_its_process_only(image_name: str) -> None:
    container_engine = engine()
    image = image_of(image_name)
    result = subprocess.run(
        [container_engine, "run", "--rm", "--entrypoint", "python", image, "-c", PROBE],
        capture_output=True,
        text=True,
        check=False,
        env=ENGINE_ENV,
        timeout=300,
    )
    assert result.returncode == 0, f"{image}: {result.stderr}"
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["cli"], f"{image}: `sfmlops --help` failed"
    assert {key: found[key] for key in EXPECTED[image_name]} == EXPECTED[image_name], image
