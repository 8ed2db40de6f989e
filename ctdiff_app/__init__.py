"""The app's own package: view-models of the Streamlit pages, the workspace, the demo bootstrap.

Layer above ``eval`` and ``ctdiff`` (it may import both; neither imports it).
"""
