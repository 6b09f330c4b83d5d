"""Test helper: what MLflow answers the API's own credentials, asked from inside the API's
container (Compose) or pod (cluster), where the tracking server is reachable."""

from __future__ import annotations

import json

# Run by the API image's Python (standard library only) with the container's environment:
# SFMLOPS_MLFLOW_TRACKING_URI and the reader's MLFLOW_TRACKING_USERNAME/PASSWORD. Prints the
# HTTP status of each request as JSON.
READER_PROBE = """
import base64, json, os, urllib.error, urllib.request
url = os.environ["SFMLOPS_MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow"
user = os.environ["MLFLOW_TRACKING_USERNAME"] + ":" + os.environ["MLFLOW_TRACKING_PASSWORD"]
model = "sfmlops-forecaster"
def status(path, body=None, credentials=True):
    request = urllib.request.Request(
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
print(json.dumps({
    "user": os.environ["MLFLOW_TRACKING_USERNAME"],
    "read without credentials": status("/registered-models/get?name=" + model, credentials=False),
    "read the model": status("/registered-models/get?name=" + model),
    "move the champion alias": status(
        "/registered-models/alias", {"name": model, "alias": "champion", "version": "1"}
    ),
    "register a version": status(
        "/model-versions/create", {"name": model, "source": "models:/" + model + "/1"}
    ),
}))
"""

# What the probe must print: reads need credentials, the reader reads and is refused writes.
READER_ANSWERS = {
    "user": "sfmlops-reader",
    "read without credentials": 401,
    "read the model": 200,
    "move the champion alias": 403,
    "register a version": 403,
}


def reader_answers(output: str) -> dict[str, object]:
    """The probe's JSON line (the last line of the output)."""
    return dict(json.loads(output.strip().splitlines()[-1]))
