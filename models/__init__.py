"""Pyro model files to read and copy (`probcons run PROBLEM --model FILE`) and the shipped
checkpoints (checkpoints/<problem>-<backbone>.pt).

This folder is installed as the package `probcons.models`; `probcons.resources` finds its files.
"""
