"""Receptive-field Gaussian upsampling of low-resolution anomaly maps.

Section 2.2 of the deeper-FCDD paper: every low-resolution cell ``d`` of an ``u x v`` map adds
``d * G2(c1, c2, sigma)`` to the ``h x w`` output, centred at the centre of its receptive field.
The 2-D Gaussian is separable, so the whole loop over cells is two matrix products::

    H' = A @ H @ B.T,   A[y, i] = g(y - c_i),   B[x, j] = g(x - c_j)

with ``g`` the 1-D Gaussian and ``c_i = (i + 0.5) * h / u - 0.5`` the centre of cell ``i`` in output
pixel coordinates (pixel centres at integers, cell ``i`` covering rows ``[i*h/u, (i+1)*h/u)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from defectmine.errors import ConfigError

#: Default Gaussian width as a fraction of the cell spacing (output pixels per low-res cell).
#: At 0.5 a neighbouring centre gets weight exp(-2) ~ 0.14 and a centre two cells away
#: exp(-8) ~ 3e-4, so one hot cell spreads over about its neighbours only, while the blend
#: between two cells still runs across the whole cell (no blocky edges). Smaller values give
#: nearest-neighbour-like blocks; larger ones smear small defects.
DEFAULT_SIGMA_PER_CELL = 0.5


def cell_centres(n_cells: int, n_pixels: int) -> torch.Tensor:
    """Centres of ``n_cells`` equal cells spanning ``n_pixels`` output pixels, in pixel coordinates."""
    return (torch.arange(n_cells, dtype=torch.float64) + 0.5) * (n_pixels / n_cells) - 0.5


def _weights(
    n_cells: int, n_pixels: int, sigma: float, normalize: bool, dtype: torch.dtype, device
) -> torch.Tensor:
    """(n_pixels, n_cells) 1-D Gaussian weights of every cell centre at every output pixel."""
    centres = cell_centres(n_cells, n_pixels).to(device)
    pixels = torch.arange(n_pixels, dtype=torch.float64, device=device)
    logits = -((pixels[:, None] - centres[None, :]) ** 2) / (2.0 * sigma**2)
    if normalize:
        # Row-normalising A and B is the same as dividing A·H·Bᵀ by A·1·Bᵀ, because the weight sum
        # of a separable kernel is itself separable. Softmax does it without underflow when sigma
        # is tiny compared with the cell spacing (plain exp would give 0/0 between centres).
        w = torch.softmax(logits, dim=1)
    else:
        w = torch.exp(logits) / (math.sqrt(2.0 * math.pi) * sigma)
    return w.to(dtype)


def gaussian_upsample(
    maps: torch.Tensor,
    size: tuple[int, int],
    sigma: float | None = None,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Upsample low-resolution anomaly maps to full resolution with receptive-field Gaussians.

    Args:
        maps: ``(N, u, v)`` or ``(N, 1, u, v)`` tensor (a numpy array is accepted too), on any
            device. Floating dtypes are kept; integer maps come back as float32. Half precision
            is computed in float32 and cast back.
        size: output ``(h, w)`` in pixels, usually the input image size.
        sigma: Gaussian standard deviation in output pixels, the same along both axes (the
            paper's isotropic ``G2``). ``None`` (default) uses ``0.5 * h / u`` along y and
            ``0.5 * w / v`` along x: half the cell spacing, see ``DEFAULT_SIGMA_PER_CELL``.
        normalize: if True (default) the output is divided by the upsampled all-ones map
            ``A·1·Bᵀ``, so a constant map stays exactly constant (borders included) and values
            stay on the scale of the input map. If False, the paper's raw sum
            ``sum_d d·G2(c1, c2, sigma)`` is returned, ``1/(2 pi sigma^2)`` factor included.
            With normalisation the half cell between a border cell's centre and the image edge
            is covered by that cell alone, so a hot border cell reaches its maximum at the edge
            rather than at its centre (still inside its own receptive field).

    Returns:
        ``(N, h, w)`` tensor on the device of ``maps``. Differentiable, although nothing needs it.

    Raises:
        ConfigError: wrong number of dimensions, a channel axis other than 1, a bad ``size`` or
            a non-positive ``sigma``.
    """
    if not isinstance(maps, torch.Tensor):
        maps = torch.as_tensor(np.asarray(maps))
    if maps.ndim == 4:
        if maps.shape[1] != 1:
            raise ConfigError(
                f"gaussian_upsample: got maps of shape {tuple(maps.shape)}; a 4-D input must be "
                "(N, 1, u, v). Upsample one channel at a time, e.g. maps[:, c:c+1]."
            )
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ConfigError(
            f"gaussian_upsample: got maps of shape {tuple(maps.shape)}; expected (N, u, v) or "
            "(N, 1, u, v). For a single map use maps[None]."
        )
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"gaussian_upsample: size must be (height, width), got {size!r}.") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"gaussian_upsample: size must be positive, got {(h, w)}.")
    _, u, v = maps.shape
    if u == 0 or v == 0:
        raise ConfigError(f"gaussian_upsample: maps have an empty spatial axis {tuple(maps.shape)}.")

    if sigma is None:
        sigma_y, sigma_x = DEFAULT_SIGMA_PER_CELL * h / u, DEFAULT_SIGMA_PER_CELL * w / v
    else:
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ConfigError(
                f"gaussian_upsample: sigma must be a positive number of output pixels, got {sigma}; "
                "pass None for the default (half the cell spacing)."
            )
        sigma_y = sigma_x = sigma

    out_dtype = maps.dtype if maps.is_floating_point() else torch.get_default_dtype()
    # float16/bfloat16 matmuls are slow or missing on CPU and lose precision in the weight sums.
    work_dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    a = _weights(u, h, sigma_y, normalize, work_dtype, maps.device)
    b = _weights(v, w, sigma_x, normalize, work_dtype, maps.device)
    out = a @ maps.to(work_dtype) @ b.T  # (h,u) @ (N,u,v) @ (v,w) -> (N,h,w)
    return out.to(out_dtype)
