"""Run a notebook as a reader would: a fresh kernel started in a given folder."""

from nbclient import NotebookClient


def run_in_fresh_kernel(nb, folder, kernel_name: str = "python3") -> list:
    """Execute ``nb`` in place in a new kernel whose working directory is ``folder``; fail on
    the first cell that raises, on any error output, or when nothing was drawn. Returns the
    code cells' outputs."""
    NotebookClient(
        nb, timeout=600, kernel_name=kernel_name, resources={"metadata": {"path": str(folder)}}
    ).execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook drew no figure"
    return outputs
