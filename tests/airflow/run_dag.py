"""Run one DAG with `dag.test()` and print the outcome as JSON (a script the tests start).

Usage: python run_dag.py DAG_ID [RUN_CONF_JSON] [MARK_SUCCESS_PATTERN]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(dag_id: str, run_conf: str = "{}", mark_success: str = "") -> None:
    from airflow.dag_processing.dagbag import BundleDagBag  # noqa: PLC0415
    from airflow.models import Variable  # noqa: PLC0415

    folder = Path(__file__).resolve().parents[2] / "images" / "airflow" / "dags"
    bag = BundleDagBag(dag_folder=folder, bundle_path=folder, bundle_name="dags-folder")
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    Variable.delete("sfmlops_last_failure")  # a record left by an earlier run is no evidence
    run = bag.dags[dag_id].test(
        run_conf=json.loads(run_conf), mark_success_pattern=mark_success or None
    )
    tasks = {
        ti.task_id: {"state": str(ti.state), "try_number": ti.try_number}
        for ti in run.get_task_instances()
    }
    print(
        "RESULT "
        + json.dumps(
            {
                "state": str(run.state),
                "tasks": tasks,
                "last_failure": Variable.get("sfmlops_last_failure", default_var=None),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
