"""Evaluation: J and F exactly as the official DAVIS tool (``metrics.py``), scoring a results
folder and writing the official CSVs (``davis.py``), the interactive protocol and resumable runs
over a dataset (``protocol.py``), and tables across runs (``report.py``)."""
