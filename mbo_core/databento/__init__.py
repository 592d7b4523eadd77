"""Databento as a source: the Historical API (`historical`: cost, download, cache), next Live.

The official `databento` client does the talking; these modules add what the pipeline needs
around it: requests as values, the cost limit, the download cache, and one-line errors.
"""
