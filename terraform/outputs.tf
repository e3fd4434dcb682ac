output "function_name" {
  description = "The Lambda function gg-force --engine lambda invokes."
  value       = aws_lambda_function.force.function_name
}

output "function_arn" {
  description = "ARN of the function."
  value       = aws_lambda_function.force.arn
}

output "bucket" {
  description = "The blob bucket."
  value       = aws_s3_bucket.blobs.bucket
}

output "region" {
  description = "Region of the bucket and the function."
  value       = var.region
}

output "storage_uri" {
  description = "GG_STORAGE_URI for the client: the same bucket and prefix the function uses."
  value       = local.storage_uri
}

output "log_group" {
  description = "CloudWatch log group of the function."
  value       = aws_cloudwatch_log_group.function.name
}

output "client_env" {
  description = "The environment gg-force needs for this deployment (the names executor/lambda_engine.py reads; docs/lambda.md)."
  value       = local.client_env
}

output "env_exports" {
  description = "client_env as shell lines: eval \"$(terraform output -raw env_exports)\"."
  value       = join("", [for name, value in local.client_env : "export ${name}='${value}'\n"])
}

output "client_read_only_policy_arn" {
  description = "IAM policy for untrusted runners (forks' CI): read blobs and reductions, write nothing; use with GG_REMOTE_RESULTS=read-only and the local engine."
  value       = aws_iam_policy.client_read_only.arn
}
