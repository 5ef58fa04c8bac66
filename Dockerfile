# tapeflow's application image: one image, one `tapeflow <command>` per compose service.
#
# Two stages: the first builds tapeflow's wheel from the sources, the second installs only that wheel,
# so the image runs exactly what the wheel contains (package data included) and nothing from the
# source tree. tests/deploy/test_wheel_services.py builds the wheel from the same COPY lines with the same
# `pip wheel` command, installs it into a clean virtualenv and starts every service from it.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY tapeflow_runtime ./tapeflow_runtime
COPY producers ./producers
COPY fake_exchange ./fake_exchange
COPY sinks ./sinks
COPY stream_apps ./stream_apps
COPY execution ./execution
COPY tapeflow_notify ./tapeflow_notify
COPY review ./review
COPY backtest ./backtest
COPY tapeflow_ui ./tapeflow_ui
COPY tapeflow ./tapeflow
RUN pip wheel --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /dist /dist
# LightGBM's wheel (the confidence model) links OpenMP, which the slim image does not carry
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
RUN pip install /dist/*.whl && rm -rf /dist && useradd --system --create-home tapeflow
USER tapeflow
WORKDIR /home/tapeflow
ENV TAPEFLOW_HOME=/home/tapeflow/.local/share/tapeflow TAPEFLOW_METRICS_HOST=0.0.0.0
ENTRYPOINT ["tapeflow"]
CMD ["--help"]
