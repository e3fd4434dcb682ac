# The blob bucket. Blobs are immutable and named by their content hash, so the
# bucket is a cache: no versioning, objects expire, gg re-uploads what is missing.

resource "aws_s3_bucket" "blobs" {
  # checkov:skip=CKV_AWS_18:Access logging would write a log object per request of a cache that sees millions of small GETs/PUTs; CloudTrail data events can be enabled account-wide if auditing is required.
  # checkov:skip=CKV_AWS_21:Versioning is pointless for content-addressed, immutable blobs (a key always holds the same bytes) and would keep expired cache objects alive.
  # checkov:skip=CKV_AWS_144:Cross-region replication of a disposable cache doubles storage and transfer cost; every blob can be re-uploaded from the client's .gg store.
  # checkov:skip=CKV_AWS_145:SSE-S3 (AES-256) already encrypts at rest; SSE-KMS would add a KMS request per object access to a cache of many small blobs, and the only principal is the function's role.
  # checkov:skip=CKV2_AWS_62:Nothing consumes bucket events; the client and the function talk directly.
  bucket        = local.bucket_name
  force_destroy = true
}

resource "aws_s3_bucket_ownership_controls" "blobs" {
  bucket = aws_s3_bucket.blobs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "blobs" {
  bucket = aws_s3_bucket.blobs.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "blobs" {
  bucket = aws_s3_bucket.blobs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "blobs" {
  bucket = aws_s3_bucket.blobs.id

  # Blobs and the reduction records under PREFIX/reductions/ expire alike. A record is
  # written after the values it names, so it rarely outlives them; one that does names
  # a missing value, which gg-force drops and rebuilds (docs/storage.md).
  rule {
    id     = "expire-cached-blobs"
    status = "Enabled"

    filter {
      prefix = "${var.storage_prefix}/"
    }

    expiration {
      days = var.cache_expiry_days
    }
  }

  # A lease (PREFIX/leases/<THUNK>) lives seconds to minutes and is deleted when its
  # thunk is done; one left by a crashed forcer is void after its expiry anyway. Drop
  # such leftovers after a day (where rules overlap, S3 applies the shorter expiry).
  rule {
    id     = "expire-leases"
    status = "Enabled"

    filter {
      prefix = "${var.storage_prefix}/leases/"
    }

    expiration {
      days = 1
    }
  }

  # A multipart upload cut short (a function killed at its timeout) leaves parts
  # that are billed but invisible; drop them anywhere in the bucket after a day.
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.blobs.arn,
      "${aws_s3_bucket.blobs.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "blobs" {
  bucket = aws_s3_bucket.blobs.id
  policy = data.aws_iam_policy_document.bucket.json

  # A policy can only be attached once the public access block is in place;
  # otherwise S3 may reject it as public while the block is being created.
  depends_on = [aws_s3_bucket_public_access_block.blobs]
}
