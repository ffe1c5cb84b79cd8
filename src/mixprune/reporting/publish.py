"""A run's report written out: the paper's report for the paper's study, the generic one for any other, with its
figures and a self-contained HTML page.

    write_report(results, RunPaths(out))    # report.md, plots/*.png, report.html, each written atomically
    observations(results)                   # the plain statements that close the report (the CLI prints them)
    with report_dir(Path("runs/sweep")): ...  # `mixprune report DIR`: locked, and no file of the user's replaced
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..core.atomic import open_regular, write_text_atomic
from ..core.errors import OutputError
from ..core.outputs import exclusive_dir
from ..core.paths import RunPaths
from ..study.results import Results, read_history
from .audit import paper_setting
from .html import markdown_to_html
from .paper_report import paper_observations, paper_report
from .report import common_observations, generic_report, variant_observations


def render_report(results: Results) -> str:
    """The paper's report for the paper's study; the same measurements per variant for any other."""
    return paper_report(results) if paper_setting(results) else generic_report(results)


def observations(results: Results) -> list[str]:
    """Plain statements of what this run measured (no significance test): against the paper's headline claims
    for the paper's study, per variant against its parent otherwise."""
    lines = paper_observations(results) if paper_setting(results) else variant_observations(results)
    return lines + common_observations(results)


CAPTIONS = {"curves": "Test accuracy per epoch, mean over seeds", "f1": "Per-class F1, mean over seeds",
            "confusion": "Confusion matrices, summed over seeds (rows: true class)",
            "size": "File size of every artifact against the test accuracy of the decoded file",
            "layers": "Weights pruned per layer (mean over seeds)"}


def figures_section(results: Results, paths: RunPaths) -> list[str]:
    """Draw the figures from the results and history.csv; markdown lines that show them."""
    from .plots import write_plots

    figures = write_plots(results, read_history(paths), paths.plots_dir)
    out = ["## Figures", ""]
    for key, path in figures.items():
        out += [f"![{CAPTIONS[key]}]({path.relative_to(paths.root).as_posix()})", "", CAPTIONS[key] + ".", ""]
    return out


def write_report(results: Results, paths: RunPaths) -> str:
    """report.md, the figures in plots/, and report.html (self-contained) for one run."""
    text = render_report(results)
    head, sep, tail = text.partition("## Per-class F1")
    text = head + "\n".join(figures_section(results, paths)) + "\n" + sep + tail
    write_text_atomic(paths.report_md, text)
    write_text_atomic(paths.report_html, markdown_to_html(text, paths.root))
    return text


OWN = {"report.md": b"# mixprune", "report.html": b"<!doctype html><html><head><meta charset='utf-8'><title>mixprune"}


@contextlib.contextmanager
def report_dir(root: Path) -> Iterator[Path]:
    """`root` locked for writing a report into it (a second writer fails at once), once it is clear that no
    report.md or report.html there is anyone's but mixprune's: a file of the user's is refused, never replaced."""
    with exclusive_dir(root):
        for name, head in OWN.items():
            path = root / name
            try:
                with open_regular(path) as fh:
                    ours = fh.read(len(head)) == head
            except FileNotFoundError:
                continue
            except OSError:
                ours = False
            if not ours:
                raise OutputError(f"{path} exists and was not written by mixprune; move it away (mixprune report "
                                  "writes report.md and report.html there)")
        yield root
