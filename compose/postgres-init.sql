-- Runs once, on an empty data directory (the image's /docker-entrypoint-initdb.d contract), as
-- the sfmlops user: the databases of the MLflow tracking server and of Airflow's metadata.
CREATE DATABASE mlflow;
CREATE DATABASE airflow;
