"""Repository-wide pytest set-up.

The Kedro project directory is named like its package (``purchase_predict/``), so pytest's
importlib mode would register the directory as a namespace package and hide the installed
package; importing the real one first prevents that. The API suite runs without it.
"""

import contextlib

with contextlib.suppress(ImportError):
    import purchase_predict  # noqa: F401
