"""Fetching data: corpora (hub, wheels, text files) and files shipped inside registry wheels."""
