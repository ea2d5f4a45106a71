# litebox-pack in a container:
#   docker build -t litebox-pack .
#   docker run --rm -v "$PWD:/data" litebox-pack /data/app -o /data/app.tar
# gcc stays in the image: `litebox-pack run` builds its small native runtime on first use.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md /src/
COPY rewriter /src/rewriter
COPY packager /src/packager
RUN python3 -m venv /opt/litebox-pack \
    && /opt/litebox-pack/bin/pip install --no-cache-dir /src \
    && rm -rf /src

ENV PATH=/opt/litebox-pack/bin:$PATH
WORKDIR /data
ENTRYPOINT ["litebox-pack"]
CMD ["--help"]
