resource "aws_cloudwatch_log_group" "function" {
  # checkov:skip=CKV_AWS_158:Logs hold thunk IDs and stderr tails of build steps, already encrypted at rest by CloudWatch; a customer KMS key adds cost and key management for no extra access control.
  # checkov:skip=CKV_AWS_338:Retention is a variable (default 14 days): these are debugging logs of disposable build jobs, and a year of them is cost without use.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
}
