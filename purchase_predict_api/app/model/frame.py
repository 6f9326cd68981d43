"""The model frame: sessions as columns, in contract order and with the contract's dtypes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from app.models import Session
from purchase_contract.features import FEATURE_DTYPES, FEATURE_NAMES

if TYPE_CHECKING:
    import pandas as pd

FEATURE_COLUMNS = list(FEATURE_NAMES)


def sessions_frame(sessions: Sequence[Session]) -> pd.DataFrame:
    """One row per session, feature columns in contract order and types (missing text = NaN)."""
    import pandas as pd  # noqa: PLC0415 - only the scikit-learn path needs it (cold start)

    columns: dict[str, pd.Series] = {}
    for name, dtype in FEATURE_DTYPES.items():
        if dtype == "object":
            # Absent, null or "": NaN, as in training; object dtype, since pandas 3 would infer
            # its own string dtype.
            values = [session.get(name) or np.nan for session in sessions]
            columns[name] = pd.Series(values, dtype=object)
        else:
            columns[name] = pd.Series([session[name] for session in sessions], dtype=dtype)
    return pd.DataFrame(columns, columns=FEATURE_COLUMNS)
