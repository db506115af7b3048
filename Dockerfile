# The Airflow image with loyalflow installed from this checkout, pinned by constraints.txt (the locked
# dependencies; tests/test_compose.py checks that this tag is the locked Airflow). docker-compose.yml
# mounts plugins/ over /opt/loyalflow/plugins, so the editable install runs the checkout's code.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml constraints.txt README.md /opt/loyalflow/
COPY --chown=airflow:root plugins /opt/loyalflow/plugins
RUN pip install --no-cache-dir -c /opt/loyalflow/constraints.txt -e /opt/loyalflow
# the one-shot seeding of docker-compose.yml's loyalflow-seed service
COPY --chown=airflow:root docker/seed_warehouse.py /opt/loyalflow/docker/seed_warehouse.py
