# MinIO's last community release, pinned by tag AND digest: the tag says what it is, the digest
# (the multi-arch index) makes it immutable, so a moved or replaced tag fails the build instead
# of changing the server under the tests. Docker Hub's minio/minio was deleted in 2026-09 and
# MinIO is source-only since 2025-10; quay.io still serves this release. If that copy goes,
# MINIO_DOCKERFILE names another Dockerfile: minio-community.Dockerfile or seaweedfs.Dockerfile
# beside this one (README, "The Docker path"). tox-docker has no `command` option, so the CMD
# starting the server lives here too.
FROM quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z@sha256:14cea493d9a34af32f524e538b8346cf79f3321eff8e708c1e2960462bd8936e
CMD ["server", "/data", "--console-address", ":9001"]
