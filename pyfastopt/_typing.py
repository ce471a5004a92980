"""Type aliases of the public API's annotations (numpy.typing)."""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import numpy.typing as npt

#: what the functions accept for an array: anything ``numpy.asarray`` takes
ArrayLike = npt.ArrayLike
#: a float32 or float64 result (the dtype follows the inputs)
FloatArray = npt.NDArray[np.floating[Any]]
#: an int8 or uint8 result
QuantArray = npt.NDArray[Union[np.int8, np.uint8]]

__all__ = ["ArrayLike", "FloatArray", "QuantArray"]
