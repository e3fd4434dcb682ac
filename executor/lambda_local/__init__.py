"""A local AWS Lambda endpoint (Invoke API + Runtime API + awslambdaric workers).

See :mod:`executor.lambda_local.server` (``EndpointConfig``, ``LocalLambda``, ``serve``);
started by ``gg lambda-local``. Nothing is imported here, so that registering the
subcommand does not load aiohttp into every ``gg`` invocation.
"""
