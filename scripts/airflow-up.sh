#!/usr/bin/env bash
# A local Airflow with the sfmlops DAGs, from .venv-airflow: `make airflow-up`.
# UI and API on http://127.0.0.1:8080; metadata in $SFMLOPS_HOME/airflow (default .sfmlops).
# Tasks reach sfmlops through SFMLOPS_CLI (default: the repository's .venv/bin/sfmlops) and
# the API at SFMLOPS_API_URL (default http://127.0.0.1:4242; start it with `sfmlops serve`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
home=${SFMLOPS_HOME:-$root/.sfmlops}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$home/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=$root/images/airflow/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT=8080
export SFMLOPS_CLI=${SFMLOPS_CLI:-$root/.venv/bin/sfmlops}
# standalone starts its components as `airflow ...` processes: ours must come first on PATH.
export PATH=$root/.venv-airflow/bin:$PATH
mkdir -p "$AIRFLOW_HOME"
if [[ ! -x ${SFMLOPS_CLI%% *} ]]; then
  echo "warning: SFMLOPS_CLI=$SFMLOPS_CLI is not an executable; run 'make install' or set it" >&2
fi
echo "Airflow UI: http://127.0.0.1:8080"
echo "Admin password: written by 'airflow standalone' to $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
echo "DAGs: $AIRFLOW__CORE__DAGS_FOLDER (sfmlops via $SFMLOPS_CLI)"
exec airflow standalone
