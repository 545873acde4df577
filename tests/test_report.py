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
