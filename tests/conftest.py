"""Shared pytest set-up: the real local AWS stand-ins (moto server, local Lambda endpoint)."""

pytest_plugins = ["tests.aws_fixtures"]
