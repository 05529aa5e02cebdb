"""Array aliases and constants shared by the finder's modules."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: Gaussian FWHM over sigma, ``2 sqrt(2 ln 2)``.
FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))
