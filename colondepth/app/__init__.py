"""The Streamlit review app: ``review.py`` (entry script), ``views/`` (its pages), ``common.py`` (helpers the
pages share; imports Streamlit) and :mod:`colondepth.app.data` (pure data access: no Streamlit).

Start it with ``colondepth app --root DIR``.  Importing this package does not import Streamlit.
"""
