# gg-py on AWS: one bucket for content-addressed blobs, one function that forces
# thunks (lambda_handler.handler.handle), its role and its log group.
#
# The names computed here are used by several files; the values the client needs
# (GG_STORAGE_URI, the function name) are in outputs.tf.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  function_name  = "${var.name_prefix}-force"
  bucket_name    = coalesce(var.bucket_name, "${var.name_prefix}-${data.aws_caller_identity.current.account_id}-${var.region}")
  log_group_name = "/aws/lambda/${local.function_name}"
  package_path   = coalesce(var.package_path, "${path.module}/../build/gg-lambda-${var.architecture}.zip")

  # What the handler reads (lambda_handler/handler.py, executor/worker.py, ir/storage/s3.py); keep in sync
  # with docs/lambda.md. tests/test_terraform.py checks this against the code.
  storage_uri   = "s3://${local.bucket_name}/${var.storage_prefix}?region=${var.region}"
  cache_dir     = "/tmp/gg"
  cache_max_mib = floor(var.ephemeral_storage_mb * var.cache_fraction_percent / 100)
  parallelism   = coalesce(var.thunk_parallelism, max(1, ceil(var.memory_mb / 1769)))

  # What the client (gg-force --engine lambda) needs to know about this deployment.
  client_env = merge(
    {
      GG_ENGINE               = "lambda"
      GG_STORAGE_URI          = local.storage_uri
      GG_LAMBDA_FUNCTION      = aws_lambda_function.force.function_name
      GG_LAMBDA_REGION        = var.region
      GG_LAMBDA_TIMEOUT       = tostring(var.timeout_s)
      GG_LAMBDA_MEMORY_MIB    = tostring(var.memory_mb)
      GG_LAMBDA_EPHEMERAL_MIB = tostring(var.ephemeral_storage_mb)
    },
    # A reservation caps concurrent executions: more parallel invocations would be throttled.
    var.reserved_concurrency > 0 ? { GG_LAMBDA_CONCURRENCY = tostring(var.reserved_concurrency) } : {},
  )
}
