"""Where the kit lives online: the repository, and the Colab and Binder links to its notebooks.

One place for these addresses; the notebooks' badges, the README and the website use them
(``tests/test_notebooks.py`` checks that every notebook's badge points at itself).

Examples
--------
>>> colab_url("03-fedavg-live.ipynb")
'https://colab.research.google.com/github/fedlab-widgets/fedlab-widgets/blob/main/notebooks/03-fedavg-live.ipynb'
"""

from __future__ import annotations

__all__ = ["REPOSITORY", "BRANCH", "colab_url", "colab_badge", "BINDER_URL", "BINDER_BADGE",
           "PIP_INSTALL"]

#: GitHub owner/name of the kit (change it here, in one place, for a fork).
REPOSITORY = "fedlab-widgets/fedlab-widgets"
BRANCH = "main"
#: What Colab installs (the notebooks' first code cell).
PIP_INSTALL = f"fedlab-widgets @ git+https://github.com/{REPOSITORY}@{BRANCH}"
BINDER_URL = f"https://mybinder.org/v2/gh/{REPOSITORY}/{BRANCH}?urlpath=lab/tree/notebooks"
BINDER_BADGE = f"[![Launch on Binder](https://mybinder.org/badge_logo.svg)]({BINDER_URL})"


def colab_url(notebook: str) -> str:
    """The address that opens ``notebooks/<notebook>`` of the repository in Google Colab."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{notebook}"


def colab_badge(notebook: str) -> str:
    """A Markdown "Open in Colab" badge for ``notebook``."""
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook)})")
