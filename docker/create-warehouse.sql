-- Run once by the postgres image on a fresh volume (docker-compose.yml mounts it in
-- /docker-entrypoint-initdb.d): the customer warehouse, seeded by the loyalflow-seed service, and
-- loyalflow's own state database (LOYALFLOW_STATE_URL). The metadata database is POSTGRES_DB.
CREATE DATABASE warehouse OWNER airflow;
CREATE DATABASE loyalflow OWNER airflow;
