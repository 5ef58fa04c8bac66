# tapeflow's application image: one image, one `tapeflow <command>` per compose service.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY tapeflow_runtime ./tapeflow_runtime
COPY producers ./producers
COPY fake_exchange ./fake_exchange
COPY sinks ./sinks
COPY stream_apps ./stream_apps
COPY execution ./execution
COPY backtest ./backtest
COPY tapeflow ./tapeflow
RUN pip install . && useradd --system --create-home tapeflow
USER tapeflow
ENV TAPEFLOW_HOME=/home/tapeflow/.local/share/tapeflow TAPEFLOW_METRICS_HOST=0.0.0.0
ENTRYPOINT ["tapeflow"]
CMD ["--help"]
