# litebox-pack in a container:
#   docker build -t litebox-pack .
#   docker run --rm -v "$PWD:/data" litebox-pack /data/app -o /data/app.tar
#   docker run --rm -v "$PWD:/data" litebox-pack --oci-archive /data/img.tar -o /data/img-lb.tar
# The build stage compiles `litebox-pack run`'s native runtime ahead of time, so the image ships
# no compiler. It runs as an unprivileged user (uid 1000); `docker run --user "$(id -u):$(id -g)"`
# makes the files it writes yours whatever your uid.
# BASE can name any Debian 12 (bookworm) image, e.g. one made offline with debootstrap.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
# Debian's stable archive keeps one version of each package per point release, so pinning
# versions would only break the build at the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv gcc gcc-multilib libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md LICENSE /src/
COPY rewriter /src/rewriter
COPY packager /src/packager
# The runtimes (x86-64 and i386 guests) land beside the virtual environment, with the stamp of
# the sources they were built from; LITEBOX_PACK_RUNTIME_DIR points `run` at them.
RUN python3 -m venv /opt/litebox-pack \
    && /opt/litebox-pack/bin/pip install --no-cache-dir /src \
    && XDG_CACHE_HOME=/tmp/build-cache \
       /opt/litebox-pack/bin/python -m packager.runtime.build /opt/litebox-pack/runtime \
    && rm -rf /tmp/build-cache

FROM ${BASE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="litebox-pack" \
      org.opencontainers.image.description="Package Linux programs for LiteBox: resolve their libraries, rewrite every syscall into a trampoline jump, stream a tar." \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --user-group --create-home litebox
COPY --from=build /opt/litebox-pack /opt/litebox-pack
# The cache lives in /tmp: any uid given with --user can write there.
ENV PATH=/opt/litebox-pack/bin:$PATH \
    LITEBOX_PACK_RUNTIME_DIR=/opt/litebox-pack/runtime \
    XDG_CACHE_HOME=/tmp/litebox-pack-cache
USER 1000:1000
WORKDIR /data
ENTRYPOINT ["litebox-pack"]
CMD ["--help"]
