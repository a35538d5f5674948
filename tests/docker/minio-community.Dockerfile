# A maintained community build of MinIO, for MINIO_DOCKERFILE=tests/docker/minio-community.Dockerfile.
# coollabsio/minio builds MinIO's archived source per release tag (testcontainers-python's
# default image since 2026-09), on the same layout as the official image: entrypoint, `mc`
# inside (so tox.ini's `mc ready local` health check works), S3 on :9000.
# This release carries MinIO's October 2025 security fix, which the last official image lacks.
# The digest is the one other public projects pin for this tag; these machines reach no
# container registry, so it was not pulled here: check it before relying on it, e.g.
# `docker buildx imagetools inspect ghcr.io/coollabsio/minio:RELEASE.2025-10-15T17-29-55Z`.
FROM ghcr.io/coollabsio/minio:RELEASE.2025-10-15T17-29-55Z@sha256:69b55a1c1c5dc285ce04db96689f5b2102317fc77a50680a1874ca6efd1c87f9
CMD ["server", "/data", "--console-address", ":9001"]
