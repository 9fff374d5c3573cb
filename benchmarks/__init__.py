"""udrl.benchmarks: the cross-backend benchmark harness (`udrl bench`) and its report.

Results recorded on our machines live in ``benchmarks/results/`` of the repository.
"""
