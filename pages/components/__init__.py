"""Streamlit code shared by the app's pages (not a page: Streamlit only lists ``pages/*.py``).

Import as ``from pages.components.state import ...``; ``streamlit run app.py`` puts the repo root on
``sys.path`` and pytest does the same (``pythonpath = ["."]``).
"""
