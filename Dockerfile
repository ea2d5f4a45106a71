# litebox-pack in a container:
#   docker build -t litebox-pack .
#   docker run --rm -v "$PWD:/data" litebox-pack /data/app -o /data/app.tar
#   docker run --rm -v "$PWD:/data" litebox-pack --oci-archive /data/img.tar -o /data/img-lb.tar
# gcc stays in the image: `litebox-pack run` builds its small native runtime on first use.
# BASE can name any Debian 12 (bookworm) image, e.g. one made offline with debootstrap.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
# Debian's stable archive keeps one version of each package per point release, so pinning
# versions would only break the build at the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY rewriter /src/rewriter
COPY packager /src/packager
RUN python3 -m venv /opt/litebox-pack \
    && /opt/litebox-pack/bin/pip install --no-cache-dir /src

FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/litebox-pack /opt/litebox-pack
ENV PATH=/opt/litebox-pack/bin:$PATH
WORKDIR /data
ENTRYPOINT ["litebox-pack"]
CMD ["--help"]
