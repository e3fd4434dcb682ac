resource "aws_lambda_function" "force" {
  # checkov:skip=CKV_AWS_116:Invocations are synchronous (RequestResponse); the client sees every failure and retries it, so a dead-letter queue would never receive anything.
  # checkov:skip=CKV_AWS_117:The function only talks to S3 and CloudWatch over TLS; a VPC would need a NAT gateway or endpoints (cost, cold-start latency) for no added isolation.
  # checkov:skip=CKV_AWS_173:The environment holds no secrets (a bucket URI and cache sizes); Lambda encrypts it at rest with an AWS-managed key already.
  # checkov:skip=CKV_AWS_272:The package is built locally by `gg lambda package` and deployed by the same user; code signing needs an AWS Signer profile outside this module's scope.
  function_name = local.function_name
  description   = "gg-py: forces thunks (content-addressed jobs) with blobs in s3://${local.bucket_name}/${var.storage_prefix}"
  role          = aws_iam_role.function.arn

  filename         = local.package_path
  source_code_hash = filebase64sha256(local.package_path)
  handler          = "lambda_handler.handler.handle"
  runtime          = var.python_runtime
  architectures    = [var.architecture]

  memory_size                    = var.memory_mb
  timeout                        = var.timeout_s
  reserved_concurrent_executions = var.reserved_concurrency

  ephemeral_storage {
    size = var.ephemeral_storage_mb
  }

  environment {
    variables = {
      GG_STORAGE_URI   = local.storage_uri
      GG_CACHE_DIR     = local.cache_dir
      GG_CACHE_MAX_MIB = tostring(local.cache_max_mib)
      # Thunks of one batch run at once, up to this many.
      GG_THUNK_PARALLELISM = tostring(local.parallelism)
    }
  }

  tracing_config {
    mode = "PassThrough"
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function.name
  }

  # The log group (with its retention) must exist before the first invocation,
  # or Lambda would create one that never expires.
  depends_on = [
    aws_cloudwatch_log_group.function,
    aws_iam_role_policy.function,
  ]
}
