"""A second app for the harness's tier, shaped unlike the sample: its lifespan yields state,
its session dependency yields a sessionmaker, a repository holds its own S3 client."""
