import json

import pytest

from benchmarks import render, run
from benchmarks.machine import cpu_model, machine_facts
from benchmarks.timing import summarize, time_interleaved
from benchmarks.training import run_training_benchmark
from pdblib.defenses import DEFENSES, Defense
from pdblib.utils import InputError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z_]*` is deprecated:FutureWarning")

# Tiny settings: these tests check that the benchmark runs and what it writes, never its speed.
TINY_ARGS = [
    "--model", "mlp", "--repeats", "2", "--warmup", "1", "--latency-batch", "1", "--throughput-batch", "8",
    "--train-batch-sizes", "8", "--transition-ratios", "0", "0.5", "--penalty-fractions", "1", "0.5",
    "--train-batches", "2",
    "--train-warmup", "0", "--train-repeats", "2",
]
SUMMARY_KEYS = {"median", "q1", "q3", "iqr", "min", "max", "repeats"}


class _NeedsSurrogate(Defense):
    """A registered defense that the benchmark factory cannot build: it needs a second model."""

    name = "needs_surrogate"

    def __init__(self, model, num_classes, surrogate):
        super().__init__(num_classes)

    def _answer(self, x):  # pragma: no cover - never built
        raise NotImplementedError

    def reference_labels(self, x):  # pragma: no cover - never built
        raise NotImplementedError


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Results of one tiny end-to-end run, with one registered defense that cannot be built."""
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "results.json"
    markdown = folder / "benchmarks.md"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(DEFENSES, _NeedsSurrogate.name, _NeedsSurrogate)
        returned = run.main(["--out", str(out), "--markdown", str(markdown), *TINY_ARGS])
    return returned, out, markdown


def test_run_writes_json_with_sections(tiny_run):
    returned, out, _ = tiny_run
    written = json.loads(out.read_text())
    assert written["command"].startswith("python -m benchmarks.run --out")
    for key in ("schema_version", "created", "settings", "machine", "inference", "training"):
        assert key in written
    assert written["settings"]["repeats"] == 2
    assert written["inference"]["baseline"] == "network"
    assert written["training"]["baseline"] == "plain"
    assert written["command"] == returned["command"]


def test_run_records_machine_facts(tiny_run):
    machine = tiny_run[0]["machine"]
    for key in ("cpu_model", "logical_cores", "usable_cores", "torch", "torch_threads"):
        assert machine[key] not in (None, "")


def test_inference_rows_cover_every_method(tiny_run):
    inference = tiny_run[0]["inference"]
    methods = {row["method"] for row in inference["rows"]}
    expected = {"network", "network_torchscript", "pdb_torchscript", "pdb"} | (set(DEFENSES) - {"needs_surrogate"})
    assert expected <= methods
    for row in inference["rows"]:
        assert row["latency"]["batch_size"] == 1
        assert row["throughput"]["batch_size"] == 8
        assert SUMMARY_KEYS <= set(row["latency"])
        assert row["latency"]["repeats"] == 2
        assert row["latency"]["ratio"] > 0
        assert row["throughput"]["ratio"] > 0
    baseline = next(row for row in inference["rows"] if row["method"] == "network")
    assert baseline["latency"]["ratio"] == 1.0
    assert baseline["throughput"]["ratio"] == 1.0


def test_inference_skips_unbuildable_defense(tiny_run):
    inference = tiny_run[0]["inference"]
    assert [item["defense"] for item in inference["skipped"]] == ["needs_surrogate"]
    assert "surrogate" in inference["skipped"][0]["reason"]
    assert "needs_surrogate" not in {row["method"] for row in inference["rows"]}


def test_training_rows_cover_grid(tiny_run):
    rows = tiny_run[0]["training"]["rows"]
    assert len(rows) == 1 + 2 * 2 * 2  # plain, then two penalty methods at two fractions and two ratios
    plain = next(row for row in rows if row["method"] == "plain")
    assert plain["ratio"] == 1.0
    assert plain["samples_per_epoch"] == 16
    with_transition = next(row for row in rows if row["method"] == "pdb_exact" and row["transition_ratio"] == 0.5
                           and row["penalty_fraction"] == 0.5)
    assert with_transition["samples_per_epoch"] == 24
    assert with_transition["batches_per_epoch"] == 3
    for row in rows:
        assert SUMMARY_KEYS <= set(row["seconds_per_epoch"])
        assert row["seconds_per_epoch"]["repeats"] == 2


def test_markdown_page_has_tables(tiny_run):
    page = tiny_run[2].read_text()
    assert page.startswith("# Benchmarks")
    assert "python -m benchmarks.run --out" in page
    assert "## Machine" in page
    assert "## Defended inference" in page
    assert "## Training" in page
    assert "| method | what is timed |" in page
    assert "| method | batch size | transition ratio | penalty fraction |" in page
    assert "`pdb_torchscript`" in page
    assert "`needs_surrogate`" in page


def test_render_command_writes_page(tiny_run, tmp_path):
    out = tmp_path / "docs" / "benchmarks.md"
    render.main([str(tiny_run[1]), "--out", str(out)])
    assert out.read_text() == render.render_markdown(tiny_run[0], source=tiny_run[1])


def test_render_rejects_foreign_json():
    with pytest.raises(KeyError, match="benchmarks.run"):
        render.render_markdown({"rows": []})


def test_summarize_quartiles():
    stats = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert stats["median"] == 3.0
    assert stats["q1"] == 2.0
    assert stats["q3"] == 4.0
    assert stats["iqr"] == 2.0
    assert stats["repeats"] == 5


def test_summarize_rejects_empty():
    with pytest.raises(InputError, match="empty"):
        summarize([])


def test_time_interleaved_rotates_order():
    calls = []
    seconds = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                               warmup=1, repeats=2)
    assert calls == ["a", "b", "a", "b", "b", "a"]
    assert len(seconds["a"]) == 2
    assert len(seconds["b"]) == 2


def test_cpu_model_reads_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU 3000\n")
    assert cpu_model(cpuinfo) == "Example CPU 3000"


def test_machine_facts_types():
    facts = machine_facts()
    assert isinstance(facts["logical_cores"], int)
    assert isinstance(facts["torch_threads"], int)


def test_training_rejects_bad_arguments():
    with pytest.raises(InputError, match="batches"):
        run_training_benchmark(batches=0)
    with pytest.raises(InputError, match="transition ratio"):
        run_training_benchmark(transition_ratios=(-0.1,))
    with pytest.raises(InputError, match="penalty fractions"):
        run_training_benchmark(penalty_fractions=(0.0,))


def _quality_rows():
    import pandas as pd

    rows = []
    for method, accs in (("exact", [0.890, 0.894, 0.892]), ("finite_difference", [0.870, 0.872, 0.868])):
        for seed, acc in enumerate(accs):
            rows.append({"penalty_method": method, "retrain_seed": seed, "defended_acc": acc, "acc_drop": 0.9 - acc,
                         "flip_rate": 0.01, "seconds_per_epoch": 10.0 if method == "exact" else 6.0,
                         "clone_acc_knockoff_random": 0.80, "clone_acc_jbda": 0.50 + 0.01 * seed})
    return pd.DataFrame(rows)


def test_penalty_quality_summary_and_spread_verdict():
    from benchmarks.penalty_quality import summarize as summarize_quality
    from benchmarks.penalty_quality import variant_names

    assert variant_names([0, 1], ("exact", "finite_difference@0.25")) == [
        "penalty_method=exact,seed=0", "penalty_method=exact,seed=1",
        "penalty_method=finite_difference,penalty_fraction=0.25,seed=0",
        "penalty_method=finite_difference,penalty_fraction=0.25,seed=1"]
    summary = summarize_quality(_quality_rows())
    exact = summary["per_method"]["exact"]["defended_acc"]
    assert exact["n"] == 3
    assert exact["mean"] == pytest.approx(0.892)
    assert exact["sd"] == pytest.approx(0.002)
    # Equal clone accuracies are within any spread; the shifted finite-difference mean is not.
    verdict = summary["within_spread"]["finite_difference"]
    assert verdict["clone_acc_knockoff_random"] is True
    assert verdict["clone_acc_jbda"] is True
    cheap = summary["per_method"]["finite_difference"]["defended_acc"]
    assert cheap["mean"] == pytest.approx(0.870)
    assert abs(exact["mean"] - cheap["mean"]) > max(exact["sd"], cheap["sd"])
    assert verdict["defended_acc"] is False
    # A fraction below 1 is its own penalty, compared with exact on its own.
    rows = _quality_rows()
    rows["penalty_fraction"] = [1.0] * 3 + [0.25] * 3
    assert set(summarize_quality(rows)["within_spread"]) == {"finite_difference@0.25"}


@pytest.mark.parametrize("label", ["adjoint", "exact@0", "exact@1.5", "exact@quarter"])
def test_penalty_quality_rejects_bad_penalty_names(label):
    from benchmarks.penalty_quality import parse_penalty

    with pytest.raises(InputError, match="penalty"):
        parse_penalty(label)


def test_page_shows_penalty_quality_and_main_job(tiny_run):
    from benchmarks.penalty_quality import summarize as summarize_quality

    results = dict(tiny_run[0], penalty_quality={"command": "python -m benchmarks.penalty_quality --run-dir r",
                                                 "run": "quick-x", "train_size": 100, "budget": 50, "seeds": [0, 1, 2],
                                                 **summarize_quality(_quality_rows())})
    chain = {"command": "make report", "returncode": 0, "started": "2026-12-05T00:00:00+00:00",
             "wall_seconds": 1800.0, "peak_rss_gib": 1.5, "report": "reports/quick-x/index.html",
             "machine": {"usable_cores": 2, "platform": "Linux"}}
    page = render.render_markdown(results, chain=chain)
    assert "## Exact versus cheaper penalties" in page
    assert "| `exact` | 3 |" in page
    assert "| `finite_difference` | no | yes | yes |" in page
    assert "## The main job" in page
    assert "30.0 min" in page


def test_chain_records_exit_status_wall_time_and_report(tmp_path):
    import sys

    from benchmarks import chain

    out = tmp_path / "chain.json"
    status = chain.main(["--results", str(out), "--", sys.executable, "-c",
                         "print('Report: reports/x/index.html'); bytearray(50 * 2**20); raise SystemExit(3)"])
    record = json.loads(out.read_text())
    assert status == 3
    assert record["returncode"] == 3
    assert record["report"] == "reports/x/index.html"
    assert record["wall_seconds"] >= 0
    assert record["peak_rss_gib"] > 0.04


def test_profile_step_reads_code_cells_after_parameters():
    from benchmarks.profile_step import notebook_code

    cells = notebook_code("05_baselines")
    assert cells and not any("am_epochs = 2  #" in cell for cell in cells)
    assert any("stage_baselines(" in cell for cell in cells)


def test_profile_step_refuses_folder_with_later_results(tmp_path):
    from benchmarks.profile_step import check_not_run

    (tmp_path / "artifacts" / "attack").mkdir(parents=True)
    (tmp_path / "artifacts" / "attack" / "results.csv").write_text("x\n")
    check_not_run(tmp_path, "05_baselines")  # step 04's results do not block step 05
    (tmp_path / "artifacts" / "attack" / "baselines_jbda.csv").write_text("x\n")
    with pytest.raises(InputError, match="baselines_jbda.csv"):
        check_not_run(tmp_path, "05_baselines")
    with pytest.raises(InputError, match="step 04_attack"):
        check_not_run(tmp_path, "04_attack")
    (tmp_path / "artifacts" / "attack" / "baselines_jbda.csv").unlink()
    (tmp_path / "artifacts" / "report").mkdir()
    (tmp_path / "artifacts" / "report" / "04_clone_accuracy.png").write_text("figure")
    check_not_run(tmp_path, "05_baselines")  # figures of earlier steps share the report folder
    (tmp_path / "artifacts" / "report" / "done.json").write_text("{}")
    with pytest.raises(InputError, match="step 09_report"):
        check_not_run(tmp_path, "05_baselines")


def test_profile_step_rejects_non_run_folder(tmp_path):
    from benchmarks.profile_step import main

    assert main(["--run-dir", str(tmp_path), "--step", "05_baselines", "--out", str(tmp_path / "out")]) == 1


def test_run_keeps_penalty_quality_of_an_earlier_file(tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"penalty_quality": {"run": "quick-x"}, "inference": {"stale": True}}))
    run.main(["--out", str(out), "--skip-inference", *TINY_ARGS])
    written = json.loads(out.read_text())
    assert written["penalty_quality"] == {"run": "quick-x"}
    assert "inference" not in written
    assert "training" in written
