# reuseport, the tool. Built by scripts/build-images, which first installs the package and
# its dependencies on the host into build/image/site (the base image may have no pip), with
# wheels chosen for the base image's Python. Run it with the Docker socket mounted:
#   docker run --rm --network host -v /var/run/docker.sock:/var/run/docker.sock reuseport:latest --help
ARG BASE=python:3.12-slim
FROM ${BASE}
COPY build/image/site /opt/reuseport/site
# pip ran with --no-compile on the host (for another interpreter): compile here, or every
# supervisor start compiles its imports again (0.75 s instead of 0.3 s, far more when the
# replicas start beside it).
RUN python3 -m compileall -q /opt/reuseport/site
ENV PYTHONPATH=/opt/reuseport/site PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="reuseport" \
      org.opencontainers.image.description="Run N replicas of a server container on one port with SO_REUSEPORT"
ENTRYPOINT ["python3", "-m", "reuseport"]
