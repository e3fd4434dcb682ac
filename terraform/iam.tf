# The function's role: exactly the S3 actions the handler's code calls, only on the
# blob prefix, and writing to its own log group. tests/test_terraform.py derives the
# actions from the source (client method calls) and compares them with this file.

data "aws_iam_policy_document" "assume" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = "${var.name_prefix}-force"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "function" {
  # get_object, head_object; put_object and the multipart upload calls.
  statement {
    sid     = "BlobObjects"
    effect  = "Allow"
    actions = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = [
      "${aws_s3_bucket.blobs.arn}/${var.storage_prefix}/*",
    ]
  }

  # Without ListBucket, HEAD/GET of a missing key answers 403 instead of 404, and
  # the handler could not tell "not uploaded" from "not allowed".
  statement {
    sid       = "BlobListing"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.blobs.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.storage_prefix}/*"]
    }
  }

  statement {
    sid       = "OwnLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }
}

resource "aws_iam_role_policy" "function" {
  name   = "${var.name_prefix}-force"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function.json
}
