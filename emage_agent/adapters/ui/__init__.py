"""``emage-agent ui``: a web page to run, watch and steer sessions (Gradio, the ``ui`` extra).

Only ``guards`` and ``runs`` import nothing from Gradio; ``app`` is loaded when the page is served.
"""

from emage_agent.adapters.ui.guards import resolve_auth
from emage_agent.adapters.ui.runs import Run, Studio

__all__ = ["Run", "Studio", "resolve_auth"]
