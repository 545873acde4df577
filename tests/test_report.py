import json

import matplotlib.pyplot as plt
import pandas as pd

from pdblib.report import plot_attack_suite, plot_clone_accuracy, plot_tradeoff_curves


def _rows():
    rows = []
    for defense, knob, accs in (("reverse_sigmoid", "beta", [(0.9, 0.8), (0.88, 0.6)]), ("pdb", "threshold", [(0.9, 0.85)])):
        for value, (defended, clone) in zip((0.3, 1.0), accs):
            rows.append({"defense": defense, "defense_knobs": json.dumps({knob: value}), "defended_acc": defended,
                         "clone_acc": clone, "fidelity_deployed": clone, "attack": "knockoff_random",
                         "pool": "mnist", "budget": 1000, "output": "probs"})
    return pd.DataFrame(rows)


def test_tradeoff_curves_have_one_line_per_defense():
    fig = plot_tradeoff_curves(_rows())
    lines = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata()) > 0]
    assert len(lines) >= 2
    plt.close(fig)


def test_clone_accuracy_and_suite_plots_render():
    frame = _rows()
    plt.close(plot_clone_accuracy(frame, victim_acc=0.9))
    plt.close(plot_attack_suite(frame))


def test_markdown_tables_and_headings_convert():
    from pdblib.report import markdown_to_html

    page = markdown_to_html("# Title\n\nSome `code` text.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", heading_offset=2)
    assert "<h3>Title</h3>" in page
    assert "<code>code</code>" in page
    assert "<th>a</th><th>b</th>" in page
    assert "<td>1</td><td>2</td>" in page
    assert "---" not in page


def test_aggregate_over_seeds_gives_mean_and_spread():
    from pdblib.report import aggregate_over_seeds

    rows = pd.concat([_rows().assign(seed=0), _rows().assign(seed=1, clone_acc=_rows()["clone_acc"] + 0.02)])
    table = aggregate_over_seeds(rows)
    assert len(table) == len(_rows())
    assert (table["seeds"] == 2).all()
    assert table["clone_acc_sd"].round(6).eq(round((0.02 ** 2 / 2) ** 0.5, 6)).all()
    assert set(table["strength"]) == {"beta=0.3", "beta=1.0", "threshold=0.3"}


def test_single_seed_has_zero_spread_and_default_label():
    from pdblib.report import aggregate_over_seeds

    rows = _rows().assign(seed=0)
    rows.loc[0, "defense_knobs"] = "{}"
    table = aggregate_over_seeds(rows)
    assert (table["clone_acc_sd"] == 0).all()
    assert "default" in set(table["strength"])


def test_budget_and_pdb_knob_curves_render():
    from pdblib.report import plot_budget_curves, plot_pdb_knob_curves

    rows = pd.concat([_rows().assign(seed=s, budget=b) for s in (0, 1) for b in (1000, 5000)])
    plt.close(plot_budget_curves(rows))
    ablations = pd.DataFrame({"variant": ["full", "transition_only", "lambda_gp=1.0", "penalty_only"],
                              "lambda_gp": [0.1, 0.0, 1.0, 0.1], "transition_ratio": [0.1, 0.1, 0.1, 0.0],
                              "strategy": ["bisection"] * 4, "defended_acc": [0.89, 0.9, 0.87, 0.9],
                              "clone_acc": [0.8, 0.82, 0.78, 0.83]})
    fig = plot_pdb_knob_curves(ablations, base_lambda=0.1, base_ratio=0.1)
    first, second = (ax.get_lines()[0] for ax in fig.axes[:2])
    assert len(first.get_xdata()) == 3  # lambda_gp 0, 0.1, 1.0
    assert len(second.get_xdata()) == 2  # transition ratio 0, 0.1
    plt.close(fig)
