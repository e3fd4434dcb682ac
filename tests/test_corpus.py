"""Real public projects (tests/corpus/projects.py) built plainly and through gg.

For each project, in the same directory one after the other: a plain configure and
build; then ``gg-infer`` on the same configure and build commands and ``gg-force -j2``
on every library and program with the host toolchain hidden. The test fails unless

* the configure results equal the plain configure's (CMakeCache.txt entries, config.h,
  generated Makefiles),
* every library and program is byte-identical to the plain build's, or is listed with
  a checked cause in tests/corpus/known-differences.toml,
* the project's own check passes and prints what it printed for the plain build,
* at least 90% of the build's compile/link/archive commands ran as thunks.

The figures (share, timings) are printed in the session summary. Sources are Debian
source packages, cached under ``$GG_TEST_CACHE/corpus``; a fetch failure is an error.
"""

from __future__ import annotations

import time

import pytest

from tests.corpus.harness import (
    build_gg,
    build_plain,
    compare_outputs,
    configure_calls,
    configure_differences,
    force,
    prepared_source,
    real_outputs,
    thunk_share,
)
from tests.corpus.projects import PROJECTS
from tests.test_infer_support import hidden_ok, started_thunks

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")]

MIN_SHARE = 90.0


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_corpus_project_through_gg_equals_plain_build(name, tmp_path, corpus_report):
    project = PROJECTS[name]
    started = time.perf_counter()
    source = prepared_source(project, tmp_path)
    prepare_seconds = time.perf_counter() - started
    work, keep = tmp_path / name, tmp_path / "plain-outputs"

    plain = build_plain(project, source, work, keep)
    expected_check = project.check(work) if project.check else ""
    targets = [rel for rel, kind in sorted(plain.outputs.items()) if kind != "object"]
    assert targets, "the plain build made no library or program"

    gg = build_gg(project, source, work)
    problems = configure_differences(plain.configured, gg.configured)
    share = thunk_share(gg)
    configure_modelled, configure_real = configure_calls(gg)
    missing = [rel for rel in targets if not (work / rel).exists()]
    assert not missing, f"gg-infer build made no {', '.join(missing)}"
    made_real = real_outputs(plain, gg)
    placeholders = 100.0 * (len(plain.outputs) - len(made_real)) / len(plain.outputs)

    trace = tmp_path / "force.jsonl"
    forced = force(gg, targets, trace)
    if forced.returncode != 0:
        problems.append(f"gg-force exited {forced.returncode}: {forced.stderr.strip()[-2000:]}")
    output_problems, notes = compare_outputs(project, plain, keep, gg, tmp_path / "scratch")
    problems += output_problems
    if not output_problems and project.check:
        try:
            got = project.check(work)
            if got != expected_check:
                problems.append(f"check output differs:\nplain: {expected_check}\ngg:    {got}")
        except (AssertionError, OSError) as exc:
            problems.append(f"check failed: {exc}")

    if placeholders < MIN_SHARE:
        problems.append(f"only {placeholders:.1f}% of the build's outputs were placeholders after gg-infer; made "
                        f"for real ({len(made_real)}): {' '.join(made_real[:40])}")
    if share.percent < MIN_SHARE:
        problems.append(f"only {share.percent:.1f}% of compile/link/archive commands ran as thunks "
                        f"({share.modelled} of {share.total}); ran for real:\n  " + "\n  ".join(share.real[:40]))

    corpus_report.append(
        f"{name}: {share.percent:.1f}% thunks ({share.modelled}/{share.total} compile/link/archive commands, "
        f"{placeholders:.0f}% of {len(plain.outputs)} outputs placeholders), "
        f"{len(started_thunks(trace))} thunks forced; unpack+prepare {prepare_seconds:.1f}s, "
        f"plain configure {plain.seconds['configure']:.1f}s build {plain.seconds['build']:.1f}s; "
        f"gg configure {gg.seconds['configure']:.1f}s infer {gg.seconds['infer']:.1f}s "
        f"force {gg.seconds['force']:.1f}s; configure-time tool calls: {configure_modelled} modelled, "
        f"{configure_real} real" + "".join(f"\n  note: {n}" for n in notes))
    assert not problems, f"{name}: {len(problems)} problem(s):\n" + "\n".join(problems)
