"""Real PostgreSQL (and SeaweedFS as S3) from PyPI wheels for the tests, without Docker.

The library is `launcher` (start_embedded_services, embedded_services); the command line is
`python -m <this package> run|up|down|clean` (__main__). Every module receives the resolved
config.EmbeddedSettings; none reads the environment for configuration.
"""
