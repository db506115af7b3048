# The Airflow image with loyalflow installed from this checkout, pinned by constraints.txt.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml constraints.txt README.md /opt/loyalflow/
COPY --chown=airflow:root plugins /opt/loyalflow/plugins
RUN pip install --no-cache-dir -c /opt/loyalflow/constraints.txt -e /opt/loyalflow
