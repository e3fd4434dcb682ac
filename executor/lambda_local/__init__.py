"""A local AWS Lambda endpoint (Invoke API + Runtime API + awslambdaric workers).

See :mod:`executor.lambda_local.server`; started by ``gg lambda-local``.
"""

from .server import EndpointConfig, LocalLambda, serve

__all__ = ["EndpointConfig", "LocalLambda", "serve"]
