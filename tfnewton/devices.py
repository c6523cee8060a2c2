"""Where the book's chapters run: the device they pick, and one line that says so.

Every chapter opens with::

    from tfnewton.devices import chapter_device
    device = chapter_device()   # prints e.g. "tfnewton 0.1.0 · torch 2.13.0 · cpu (2 threads)"

The GPU is used where there is one. The environment variable ``TFNEWTON_DEVICE`` overrides
the choice (``TFNEWTON_DEVICE=cpu`` forces the CPU on a GPU machine, ``cuda:1`` picks a
second GPU); a value that names no usable device is an error, not a silent fallback.
"""

from __future__ import annotations

import os

import torch

from . import __version__
from ._validate import check_device

__all__ = ["ENVIRONMENT_VARIABLE", "default_device", "describe_device", "chapter_device"]

#: The environment variable that overrides :func:`default_device`.
ENVIRONMENT_VARIABLE = "TFNEWTON_DEVICE"


def default_device() -> torch.device:
    """The device the chapters compute on.

    ``$TFNEWTON_DEVICE`` when it is set (``"cpu"``, ``"cuda"``, ``"cuda:N"``); otherwise the
    first GPU when CUDA is available, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        ``TFNEWTON_DEVICE`` names no device, or names CUDA where none is available.
    """
    requested = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if requested:
        try:
            return check_device(requested)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{ENVIRONMENT_VARIABLE}={requested!r}: {err}") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device=None) -> str:
    """One line: the library's and torch's versions and the device (a GPU by its name).

    Parameters
    ----------
    device : str or torch.device, optional
        Defaults to :func:`default_device`.

    Returns
    -------
    str
        e.g. ``"tfnewton 0.1.0 · torch 2.13.0 · cpu (2 threads)"`` or
        ``"tfnewton 0.1.0 · torch 2.13.0 · cuda:0 (NVIDIA H200)"``.
    """
    device = default_device() if device is None else check_device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        where = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    else:
        threads = torch.get_num_threads()
        where = f"{device.type} ({threads} thread{'' if threads == 1 else 's'})"
    return f"tfnewton {__version__} · torch {torch.__version__} · {where}"


def chapter_device(*, announce: bool = True) -> torch.device:
    """The device a chapter runs on, printed with the versions (the chapters' first cell).

    Parameters
    ----------
    announce : bool
        Print :func:`describe_device`'s line.

    Returns
    -------
    torch.device
        :func:`default_device`.
    """
    device = default_device()
    if announce:
        print(describe_device(device))
    return device
