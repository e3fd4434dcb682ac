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
  # get_object, head_object; put_object and the multipart upload calls. Blobs and the
  # reduction records under reductions/ alike (the worker writes no records itself;
  # the same calls serve the client).
  statement {
    sid     = "BlobObjects"
    effect  = "Allow"
    actions = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = [
      "${aws_s3_bucket.blobs.arn}/${var.storage_prefix}/*",
    ]
  }

  # Leases (PREFIX/leases/<THUNK>, docs/storage.md): taken and renewed with the
  # conditional put_object above, released with delete_object -- only there.
  statement {
    sid       = "LeaseRelease"
    effect    = "Allow"
    actions   = ["s3:DeleteObject"]
    resources = ["${aws_s3_bucket.blobs.arn}/${var.storage_prefix}/leases/*"]
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

# For untrusted runners (a fork's CI): read the shared cache, never write it. One prefix
# is one trust domain (docs/trust.md): whoever can PutObject under it writes reduction
# records everyone else follows, so such runners get only the calls of
# GG_REMOTE_RESULTS=read-only with the local engine: GetObject (blobs and the records
# under reductions/, HEAD included) and ListBucket (so a missing key is a 404, not a
# 403). tests/test_terraform.py derives these from the read path of ir/storage/s3.py.
data "aws_iam_policy_document" "client_read_only" {
  statement {
    sid       = "ReadBlobsAndReductions"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.blobs.arn}/${var.storage_prefix}/*"]
  }

  statement {
    sid       = "ListPrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.blobs.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.storage_prefix}/*"]
    }
  }
}

resource "aws_iam_policy" "client_read_only" {
  name        = "${var.name_prefix}-client-read-only"
  description = "gg-force with GG_REMOTE_RESULTS=read-only: use the shared cache, never write it"
  policy      = data.aws_iam_policy_document.client_read_only.json
}
