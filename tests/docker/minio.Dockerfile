FROM quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z
CMD ["server", "/data", "--console-address", ":9001"]
