variable "region" {
  description = "AWS region for the bucket, the function and its logs (keep them together: cross-region S3 traffic is slower and billed)."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix of every resource name (function, role, log group, default bucket name)."
  type        = string
  default     = "gg-py"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,30}$", var.name_prefix))
    error_message = "name_prefix must be 2-31 characters of lowercase letters, digits and '-'."
  }
}

variable "bucket_name" {
  description = "Name of the S3 bucket for blobs. Null: <name_prefix>-<account id>-<region>, which is globally unique."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 characters, lowercase)."
  }
}

variable "storage_prefix" {
  description = "Key prefix (no leading or trailing '/') under which blobs are stored; the role may only touch keys under it."
  type        = string
  default     = "gg"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$", var.storage_prefix))
    error_message = "storage_prefix must be a non-empty key prefix without leading or trailing '/'."
  }
}

variable "memory_mb" {
  description = "Function memory in MB; Lambda gives CPU in proportion (1769 MB = one vCPU). Billed per GB-second."
  type        = number
  default     = 3008

  validation {
    condition     = var.memory_mb >= 128 && var.memory_mb <= 10240
    error_message = "memory_mb must be between 128 and 10240."
  }
}

variable "timeout_s" {
  description = "Function timeout in seconds: the longest a single thunk (plus its input download and output upload) may take."
  type        = number
  default     = 300

  validation {
    condition     = var.timeout_s >= 1 && var.timeout_s <= 900
    error_message = "timeout_s must be between 1 and 900 (Lambda's maximum)."
  }
}

variable "ephemeral_storage_mb" {
  description = "Size of the function's /tmp in MB: holds the blob cache and each thunk's work directory."
  type        = number
  default     = 2048

  validation {
    condition     = var.ephemeral_storage_mb >= 512 && var.ephemeral_storage_mb <= 10240
    error_message = "ephemeral_storage_mb must be between 512 and 10240."
  }
}

variable "cache_fraction_percent" {
  description = "Share of /tmp the warm blob cache may keep between invocations (GG_CACHE_MAX_MIB); the rest is for work directories."
  type        = number
  default     = 50

  validation {
    condition     = var.cache_fraction_percent >= 0 && var.cache_fraction_percent <= 90
    error_message = "cache_fraction_percent must be between 0 and 90."
  }
}

variable "thunk_parallelism" {
  description = "Thunks one invocation runs at once (GG_THUNK_PARALLELISM). Null: one per vCPU Lambda gives at memory_mb (1769 MB = 1 vCPU)."
  type        = number
  default     = null

  validation {
    condition     = var.thunk_parallelism == null || try(var.thunk_parallelism >= 1, false)
    error_message = "thunk_parallelism must be null or at least 1."
  }
}

variable "architecture" {
  description = "Function architecture, x86_64 or arm64. It must match the package (gg lambda package --arch) and the binaries inside thunks."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "python_runtime" {
  description = "Lambda runtime; must be the Python version the package's wheels were downloaded for."
  type        = string
  default     = "python3.11"
}

variable "package_path" {
  description = "Path of the deployment zip from `gg lambda package`. Null: ../build/gg-lambda-<architecture>.zip next to this module."
  type        = string
  default     = null
}

variable "cache_expiry_days" {
  description = "Blobs under the storage prefix are deleted this many days after they were written (they are a cache: gg re-uploads what it needs)."
  type        = number
  default     = 7

  validation {
    condition     = var.cache_expiry_days >= 1
    error_message = "cache_expiry_days must be at least 1."
  }
}

variable "log_retention_days" {
  description = "Retention of the function's CloudWatch logs, in days (one of the values CloudWatch accepts)."
  type        = number
  default     = 14

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention period CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ...)."
  }
}

variable "reserved_concurrency" {
  description = "Concurrent executions reserved for (and capping) the function: the upper bound of gg-force -j on Lambda, and of the bill. -1 = no reservation (account pool)."
  type        = number
  default     = -1
}
