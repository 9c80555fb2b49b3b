"""seelike: do vision models see alike? The analyses of Raghu et al. (NeurIPS 2021) for any vision model."""

from seelike.errors import SeelikeError
from seelike.results import Result, load_result

__version__ = "0.1.0"

__all__ = ["Result", "SeelikeError", "__version__", "load_result"]
