"""Everything that measures: the benchmarks (each figure a ratio against a baseline measured in
the same run), the kill loop, the soak and the reliability census, and the faults tests inject.

bench may import clipsearch.tune (its public functions: the phases, the runner, the cluster);
tune never imports bench, and nothing here imports Ray itself.
"""
