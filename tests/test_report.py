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
