"""Parse the DAG folder with the network and the metadata database unusable; print a summary.

Run as a script by test_dag_structure.py, in a process of its own, so that nothing
imported before (or by pytest) can have opened a connection already.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

attempts: list[str] = []


def refuse(what: str) -> Any:
    def blocked(*args: Any, **kwargs: Any) -> Any:
        attempts.append(f"{what}{args[1:] if what == 'connect' else args[:1]}")
        raise OSError(f"{what} at parse time is not allowed")

    return blocked


def main(folder: str) -> None:
    socket.socket.connect = refuse("connect")  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse("connect")  # type: ignore[method-assign]
    socket.create_connection = refuse("create_connection")
    socket.getaddrinfo = refuse("getaddrinfo")

    import sqlalchemy.engine.base  # noqa: PLC0415 - patched before Airflow imports it

    sqlalchemy.engine.base.Engine.connect = refuse("database")  # type: ignore[method-assign]
    sqlalchemy.engine.base.Engine.raw_connection = refuse("database")  # type: ignore[method-assign]

    from airflow.dag_processing.dagbag import BundleDagBag  # noqa: PLC0415

    path = Path(folder).resolve()
    bag = BundleDagBag(dag_folder=path, bundle_path=path, bundle_name="dags-folder")
    print(
        json.dumps(
            {
                "dags": sorted(bag.dags),
                "import_errors": bag.import_errors,
                "files": sorted(Path(f).name for f in bag.file_last_changed),
                "attempts": attempts,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
