"""Device choice in one place: CUDA when present, else CPU; never hard-coded elsewhere."""

from __future__ import annotations


def default_device(requested: str | None = None):
    """Return a ``torch.device``: ``requested`` if given ('cpu', 'cuda', 'cuda:1'), else CUDA if available.

    >>> default_device("cpu").type
    'cpu'
    """
    import torch

    from colondepth.errors import UserError

    if requested:
        try:
            dev = torch.device(requested)
        except (RuntimeError, ValueError):
            raise UserError(f"--device {requested}: not a device; use cpu, cuda or cuda:N") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
