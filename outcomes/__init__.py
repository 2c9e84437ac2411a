"""Patient-reported outcomes for infusion clinics: PROMIS scoring, storage and analysis.

The package never imports streamlit and never prints; the app (``app.py``, ``app_pages/``) and the
CLI (``python -m outcomes``) are thin shells over it.
"""

__version__ = "0.1.0"
