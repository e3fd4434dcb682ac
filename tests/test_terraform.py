"""The Terraform module, checked statically against the code it deploys.

No machine here reaches AWS or the Terraform registry, so ``terraform validate`` and
``plan`` cannot run. Instead the module is parsed with python-hcl2 and compared with
what the code actually does: which S3 operations it calls (scanned from the source),
which environment variables the handler reads (scanned too), and the handler it names.
A change on either side that breaks the deployment fails here.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from executor import lambda_package as package
from ir.storage.s3 import S3Storage
from ir.storage.uri import parse_s3_uri

REPO = Path(__file__).resolve().parent.parent
TERRAFORM = REPO / "terraform"

# The code that runs inside the function and reads its configuration. The S3 scan
# covers every module the package ships (anything the function may execute).
CONFIG_SOURCES = [
    *sorted((REPO / "lambda_handler").glob("*.py")),
    REPO / "executor" / "worker.py",
    REPO / "ir" / "storage" / "s3.py",
    REPO / "ir" / "storage" / "uri.py",
]

# S3 API operation (botocore method name) -> the IAM actions it needs. From AWS's
# "Actions, resources, and condition keys for Amazon S3". head_object also needs
# s3:ListBucket: without it a missing key answers 403, not 404, and "not uploaded yet"
# would look like "access denied".
S3_OPERATION_ACTIONS: dict[str, set[str]] = {
    "get_object": {"s3:GetObject"},
    "head_object": {"s3:GetObject", "s3:ListBucket"},
    "put_object": {"s3:PutObject"},
    "create_multipart_upload": {"s3:PutObject"},
    "upload_part": {"s3:PutObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "list_parts": {"s3:ListMultipartUploadParts"},
    "list_multipart_uploads": {"s3:ListBucketMultipartUploads"},
    "list_objects": {"s3:ListBucket"},
    "list_objects_v2": {"s3:ListBucket"},
    "delete_object": {"s3:DeleteObject"},
    "delete_objects": {"s3:DeleteObject"},
    "copy_object": {"s3:GetObject", "s3:PutObject"},
    "upload_part_copy": {"s3:GetObject", "s3:PutObject"},
    "get_object_attributes": {"s3:GetObject", "s3:GetObjectAttributes"},
}

# Set by Lambda itself in every function's environment (AWS docs, "Defined runtime
# environment variables"); a function may read them without the module setting them.
LAMBDA_RESERVED_ENV = {
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "TZ", "LANG", "PATH",
    "LD_LIBRARY_PATH", "PYTHONPATH",
}


# -- parsing --------------------------------------------------------------------------

def _load(path: Path) -> dict:
    with path.open() as f:
        return hcl2.load(f, serialization_options=hcl2.SerializationOptions(
            strip_string_quotes=True, explicit_blocks=False))


@pytest.fixture(scope="module")
def module() -> dict[str, dict]:
    """``{"resource": {(type, name): body}, "data": {...}, "variable": {...}, "output": {...}}``."""
    merged: dict[str, dict] = {"resource": {}, "data": {}, "variable": {}, "output": {}, "terraform": {}}
    for path in sorted(TERRAFORM.glob("*.tf")):
        parsed = _load(path)
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        merged[kind][(rtype, name)] = body
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                merged[kind].update(block)
        for block in parsed.get("terraform", []):
            merged["terraform"].update(block)
    return merged


def _one(module: dict, kind: str, rtype: str) -> dict:
    found = [body for (t, _), body in module[kind].items() if t == rtype]
    assert len(found) == 1, f"expected exactly one {kind} {rtype}, found {len(found)}"
    return found[0]


def _block(body: dict, name: str) -> dict:
    value = body[name]
    return value[0] if isinstance(value, list) else value


def _function(module: dict) -> dict:
    return _one(module, "resource", "aws_lambda_function")


# -- scans of the code ----------------------------------------------------------------

def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id.endswith("environ")) or (
        isinstance(node, ast.Attribute) and node.attr.endswith("environ"))


def env_vars_read(paths: list[Path]) -> set[str]:
    """Names of environment variables read by ``os.environ[...]``, ``environ.get(...)``
    (any mapping named ``*environ``, e.g. one passed in as a parameter), ``os.getenv``,
    and ``"X" in environ``."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            key = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault") \
                        and _is_environ(func.value):
                    key = node.args[0]
                elif (isinstance(func, ast.Attribute) and func.attr == "getenv") or \
                        (isinstance(func, ast.Name) and func.id == "getenv"):
                    key = node.args[0]
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                key = node.slice
            elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In) for op in node.ops) \
                    and any(_is_environ(c) for c in node.comparators):
                key = node.left
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
    return names


def s3_operations_called(paths: list[Path]) -> set[str]:
    """Every S3 API operation (botocore's snake_case method name) the code calls as a
    method, e.g. ``await client.get_object(...)``: names checked against botocore's own
    S3 service model, so no call of the API can hide."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model("s3")
    operations = {xform_name(op) for op in model.operation_names}
    called: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in operations:
                called.add(node.func.attr)
    return called


def _shipped_sources() -> list[Path]:
    modules = package.first_party_modules(REPO)
    return [package._module_file(REPO, m) for m in modules]


# -- the handler ----------------------------------------------------------------------

def test_function_names_the_handler_the_package_ships(module):
    function = _function(module)
    assert function["handler"] == package.HANDLER
    modname, _, attr = function["handler"].rpartition(".")
    assert modname in package.first_party_modules(REPO)
    # Static check of the signature here; tests/test_lambda_package.py imports it
    # from the unpacked zip.
    tree = ast.parse(package._module_file(REPO, modname).read_text())
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == attr]
    assert defs, f"{modname} defines no top-level {attr}()"
    assert [a.arg for a in defs[0].args.args][:2] == ["event", "context"]


def test_runtime_and_architecture_match_the_packager(module):
    variables = module["variable"]
    assert variables["python_runtime"]["default"] == package.Target().runtime
    assert variables["architecture"]["default"] == package.Target().architecture
    arch_check = _block(variables["architecture"], "validation")["condition"]
    for arch in package.ARCHITECTURES:
        assert arch in arch_check
    # Terraform's default package path is what `gg lambda package` writes by default.
    main = _load(TERRAFORM / "main.tf")
    locals_ = {k: v for block in main["locals"] for k, v in block.items()}
    default_path = package.default_output(REPO, package.Target()).relative_to(REPO).as_posix()
    expected = "${path.module}/../" + default_path.replace("x86_64", "${var.architecture}")
    assert expected in locals_["package_path"]


def test_every_environment_variable_the_handler_reads_is_set(module):
    read = env_vars_read(CONFIG_SOURCES)
    assert {"GG_STORAGE_URI", "GG_CACHE_DIR", "GG_CACHE_MAX_MIB"} <= read, "the scan found too little"
    variables = _block(_function(module), "environment")["variables"]
    missing = sorted(read - set(variables) - LAMBDA_RESERVED_ENV)
    assert not missing, f"the handler reads {missing}, which terraform/lambda.tf does not set"
    unused = sorted(set(variables) - read)
    assert not unused, f"terraform/lambda.tf sets {unused}, which no handler code reads"


def test_storage_uri_is_one_the_code_parses(module):
    from ir.storage.uri import parse_s3_uri

    main = _load(TERRAFORM / "main.tf")
    locals_ = {k: v for block in main["locals"] for k, v in block.items()}
    template = locals_["storage_uri"]
    concrete = (template.replace("${local.bucket_name}", "gg-py-123456789012-eu-west-1")
                .replace("${var.storage_prefix}", "gg").replace("${var.region}", "eu-west-1"))
    assert "${" not in concrete, concrete
    config = parse_s3_uri(concrete)
    assert (config.bucket, config.prefix, config.region) == ("gg-py-123456789012-eu-west-1", "gg", "eu-west-1")
    assert config.key("V123") == "gg/V123"  # what the IAM resource "<bucket>/<prefix>/*" covers
    assert _block(_function(module), "environment")["variables"]["GG_STORAGE_URI"] == "${local.storage_uri}"
    assert "GG_STORAGE_URI = local.storage_uri" in _locals()["client_env"]


def _locals() -> dict:
    return {k: v for block in _load(TERRAFORM / "main.tf")["locals"] for k, v in block.items()}


def _client_names() -> set[str]:
    """Every GG_* variable name the gg-force side of the Lambda engine mentions."""
    names: set[str] = set()
    for path in (REPO / "executor" / "lambda_engine.py", REPO / "executor" / "force_cli.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"GG_[A-Z0-9_]+", node.value):
                names.add(node.value)
    return names


def test_exported_client_settings_are_the_ones_gg_force_reads(module):
    client_env = _locals()["client_env"]
    exported = dict(re.findall(r"\b(GG_[A-Z0-9_]+)\s*=\s*([^,}]+)", client_env))
    client = _client_names()
    assert "GG_LAMBDA_FUNCTION" in client, "the scan found too little"
    unknown = sorted(set(exported) - client)
    assert not unknown, f"terraform exports {unknown}, which gg-force does not read"
    # Each setting that describes the deployment comes from the matching Terraform value.
    expected = {
        "GG_ENGINE": '"lambda"',
        "GG_STORAGE_URI": "local.storage_uri",
        "GG_LAMBDA_FUNCTION": "aws_lambda_function.force.function_name",
        "GG_LAMBDA_REGION": "var.region",
        "GG_LAMBDA_TIMEOUT": "tostring(var.timeout_s)",
        "GG_LAMBDA_MEMORY_MIB": "tostring(var.memory_mb)",
        "GG_LAMBDA_EPHEMERAL_MIB": "tostring(var.ephemeral_storage_mb)",
        "GG_LAMBDA_CONCURRENCY": "tostring(var.reserved_concurrency)",
    }
    for name, value in expected.items():
        if name in client:
            assert exported.get(name, "").strip() == value, name
    assert module["output"]["client_env"]["value"] == "${local.client_env}"
    assert "local.client_env" in module["output"]["env_exports"]["value"]


# -- IAM: exactly what the code uses --------------------------------------------------

def _function_policy(module) -> list[dict]:
    role_policy = _one(module, "resource", "aws_iam_role_policy")
    match = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", role_policy["policy"])
    assert match, "the role policy should be an aws_iam_policy_document"
    return module["data"][("aws_iam_policy_document", match.group(1))]["statement"]


def test_iam_grants_exactly_the_s3_actions_the_code_uses(module):
    called = s3_operations_called(_shipped_sources())
    assert {"get_object", "put_object", "head_object"} <= called, "the scan found too little"
    unmapped = sorted(called - set(S3_OPERATION_ACTIONS))
    assert not unmapped, f"map these S3 operations to IAM actions in this test: {unmapped}"
    needed = set().union(*(S3_OPERATION_ACTIONS[op] for op in called))

    statements = _function_policy(module)
    assert all(s.get("effect", "Allow") == "Allow" for s in statements)
    granted = {a for s in statements for a in s["actions"] if a.startswith("s3:")}
    assert not any("*" in a for s in statements for a in s["actions"]), "no wildcard actions"
    assert granted == needed, (f"granted but unused: {sorted(granted - needed)}; "
                               f"used but not granted: {sorted(needed - granted)}")


def test_iam_s3_access_is_confined_to_the_bucket_prefix(module):
    bucket_arn = "${aws_s3_bucket.blobs.arn}"
    for statement in _function_policy(module):
        actions = statement["actions"]
        if not any(a.startswith("s3:") for a in actions):
            continue
        for resource in statement["resources"]:
            if actions == ["s3:ListBucket"]:
                assert resource == bucket_arn
                condition = _block(statement, "condition")
                assert condition["variable"] == "s3:prefix"
                assert condition["values"] == ["${var.storage_prefix}/*"]
            elif actions == ["s3:DeleteObject"]:  # only leases are ever deleted
                assert resource == bucket_arn + "/${var.storage_prefix}/leases/*"
            else:
                assert resource == bucket_arn + "/${var.storage_prefix}/*"


def test_iam_logs_only_to_its_own_log_group(module):
    logs = [s for s in _function_policy(module) if any(a.startswith("logs:") for a in s["actions"])]
    assert len(logs) == 1
    assert sorted(logs[0]["actions"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert logs[0]["resources"] == ["${aws_cloudwatch_log_group.function.arn}:*"]
    assert _block(_function(module), "logging_config")["log_group"] == "${aws_cloudwatch_log_group.function.name}"
    assert _one(module, "resource", "aws_cloudwatch_log_group")["retention_in_days"] == "${var.log_retention_days}"


# -- the bucket -----------------------------------------------------------------------

def test_bucket_blocks_all_public_access(module):
    block = _one(module, "resource", "aws_s3_bucket_public_access_block")
    for setting in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[setting] is True, setting
    ownership = _one(module, "resource", "aws_s3_bucket_ownership_controls")
    assert _block(ownership, "rule")["object_ownership"] == "BucketOwnerEnforced"  # no ACLs at all


def test_bucket_denies_requests_without_tls(module):
    policy = _one(module, "resource", "aws_s3_bucket_policy")
    name = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", policy["policy"]).group(1)
    statements = module["data"][("aws_iam_policy_document", name)]["statement"]
    deny = [s for s in statements if s.get("effect") == "Deny"]
    assert deny, "no Deny statement"
    statement = deny[0]
    assert statement["actions"] == ["s3:*"]
    assert set(statement["resources"]) == {"${aws_s3_bucket.blobs.arn}", "${aws_s3_bucket.blobs.arn}/*"}
    principal = _block(statement, "principals")
    assert (principal["type"], principal["identifiers"]) == ("*", ["*"])
    condition = _block(statement, "condition")
    assert (condition["test"], condition["variable"], condition["values"]) == \
        ("Bool", "aws:SecureTransport", ["false"])


def test_bucket_is_encrypted_at_rest(module):
    sse = _one(module, "resource", "aws_s3_bucket_server_side_encryption_configuration")
    default = _block(_block(sse, "rule"), "apply_server_side_encryption_by_default")
    assert default["sse_algorithm"] in ("AES256", "aws:kms")


def test_cached_blobs_expire_under_the_prefix(module):
    lifecycle = _one(module, "resource", "aws_s3_bucket_lifecycle_configuration")
    rules = lifecycle["rule"]
    expiring = {r["id"]: r for r in rules if "expiration" in r}
    assert sorted(expiring) == ["expire-cached-blobs", "expire-leases"]
    rule = expiring["expire-cached-blobs"]
    assert rule["status"] == "Enabled"
    assert _block(rule, "filter")["prefix"] == "${var.storage_prefix}/"
    assert _block(rule, "expiration")["days"] == "${var.cache_expiry_days}"
    assert any("abort_incomplete_multipart_upload" in r for r in rules)
    # The reduction records live under the same prefix, so the rule covers them too.
    config = parse_s3_uri("s3://bucket/gg/blobs")
    assert S3Storage(config)._reduction_key("Tx" + "0" * 32 + "_1#out").startswith(config.prefix + "/")
    # Leases are short-lived: their own rule drops a crashed forcer's leftovers after a day.
    leases = expiring["expire-leases"]
    assert leases["status"] == "Enabled"
    assert str(_block(leases, "expiration")["days"]) == "1"
    lease_prefix = _block(leases, "filter")["prefix"].replace("${var.storage_prefix}", config.prefix)
    assert S3Storage(config)._lease_key("Tx" + "0" * 32 + "_1").startswith(lease_prefix)


def _operations_in(path: Path, functions: set[str]) -> set[str]:
    """The S3 operations called inside the named functions of ``path``, what they nest,
    and the ``self.method(...)`` calls they make in the same file, transitively (a batch
    lookup of reductions reaches ``get_object`` through a helper)."""
    import botocore.session
    from botocore import xform_name

    operations = {xform_name(op) for op in botocore.session.get_session().get_service_model("s3").operation_names}
    defs: dict[str, ast.AST] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
            defs.setdefault(node.name, node)
    called: set[str] = set()
    todo, seen = list(functions), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        for inner in ast.walk(defs[name]):
            if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute):
                if inner.func.attr in operations:
                    called.add(inner.func.attr)
                elif isinstance(inner.func.value, ast.Name) and inner.func.value.id == "self":
                    todo.append(inner.func.attr)
    return called


LEASE_PATH = {"try_lease", "read_lease", "renew", "release"}


def test_reductions_and_leases_use_only_the_granted_calls_where_granted(module):
    """Reduction records: GET and PUT under the prefix (BlobObjects). Leases: conditional
    PUT, GET and DELETE; DELETE is granted on PREFIX/leases/* only, so nothing else may
    ever delete: the one path that reaches ``delete_object`` is releasing a lease."""
    s3_source = REPO / "ir" / "storage" / "s3.py"
    assert _operations_in(s3_source, {"put_reduction", "get_reductions"}) == {"put_object", "get_object"}
    assert _operations_in(s3_source, LEASE_PATH) == {"put_object", "get_object", "delete_object"}
    methods = {node.name for node in ast.walk(ast.parse(s3_source.read_text()))
               if isinstance(node, ast.ClassDef) and node.name == "S3Storage"
               for node in node.body if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)}
    deleting = {m for m in methods if "delete_object" in _operations_in(s3_source, {m})}
    assert deleting == {"release"}
    others = [p for p in _shipped_sources() if p.resolve() != s3_source.resolve()]
    assert not s3_operations_called(others) & {"delete_object", "delete_objects"}
    statements = _function_policy(module)
    by_action = {a: s["resources"] for s in statements for a in s["actions"]}
    assert by_action["s3:DeleteObject"] == ["${aws_s3_bucket.blobs.arn}/${var.storage_prefix}/leases/*"]
    assert by_action["s3:GetObject"] == by_action["s3:PutObject"] == [
        "${aws_s3_bucket.blobs.arn}/${var.storage_prefix}/*"]  # blobs, reductions/ and leases/


# What a read-only runner calls (GG_REMOTE_RESULTS=read-only, local engine): the batch
# lookup of reductions, checks and downloads of blobs.
READ_PATH = {"get_reductions", "has", "_fetch"}
WRITE_PATH = {"put_reduction", "_put_object", "_multipart", "_abort"}


def test_the_read_only_client_policy_grants_exactly_the_read_path(module):
    s3_source = REPO / "ir" / "storage" / "s3.py"
    read = _operations_in(s3_source, READ_PATH)
    assert {"get_object", "head_object"} <= read, "the scan found too little"
    assert "put_object" in _operations_in(s3_source, WRITE_PATH)  # the scan sees writes where they are
    needed = set().union(*(S3_OPERATION_ACTIONS[op] for op in read)) | {"s3:ListBucket"}
    statements = module["data"][("aws_iam_policy_document", "client_read_only")]["statement"]
    granted = {a for s in statements for a in s["actions"]}
    assert granted == needed, f"granted {sorted(granted)}, the read path needs {sorted(needed)}"
    bucket_arn = "${aws_s3_bucket.blobs.arn}"
    for statement in statements:
        if statement["actions"] == ["s3:ListBucket"]:
            assert statement["resources"] == [bucket_arn]
            assert _block(statement, "condition")["values"] == ["${var.storage_prefix}/*"]
        else:
            assert statement["resources"] == [bucket_arn + "/${var.storage_prefix}/*"]
    policy = module["resource"][("aws_iam_policy", "client_read_only")]
    assert policy["policy"] == "${data.aws_iam_policy_document.client_read_only.json}"
    assert "client_read_only_policy_arn" in module["output"]


# -- the module's shape ---------------------------------------------------------------

def test_variables_and_outputs(module):
    for name in ("region", "name_prefix", "bucket_name", "memory_mb", "timeout_s", "ephemeral_storage_mb",
                 "architecture", "cache_expiry_days", "log_retention_days", "package_path"):
        assert name in module["variable"], name
        assert module["variable"][name].get("description"), f"variable {name} has no description"
    for name in ("function_name", "bucket", "storage_uri", "env_exports"):
        assert name in module["output"], name
    function = _function(module)
    assert function["memory_size"] == "${var.memory_mb}"
    assert function["timeout"] == "${var.timeout_s}"
    assert _block(function, "ephemeral_storage")["size"] == "${var.ephemeral_storage_mb}"
    assert function["architectures"] == ["${var.architecture}"]
    assert function["source_code_hash"] == "${filebase64sha256(local.package_path)}"


def test_provider_versions_are_pinned(module):
    terraform = module["terraform"]
    assert terraform["required_version"]
    aws = terraform["required_providers"][0]["aws"] if isinstance(terraform["required_providers"], list) \
        else terraform["required_providers"]["aws"]
    assert aws["source"] == "hashicorp/aws"
    assert aws["version"].startswith("~>")


def test_every_checkov_skip_is_justified():
    skips = []
    for path in sorted(TERRAFORM.rglob("*.tf")):
        for line in path.read_text().splitlines():
            match = re.search(r"checkov:skip=([A-Z0-9_]+)(.*)", line)
            if match:
                skips.append(match.group(1))
                reason = match.group(2).lstrip(":").strip()
                assert len(reason) > 20, f"{path.name}: {match.group(1)} is skipped without a real reason"
    assert len(skips) == len(set(skips)), "a check is skipped twice"


def test_terraform_fmt_is_clean():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed: `terraform fmt -check` not run (it runs where terraform is)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True, text=True, env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
    )
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"
