"""The evaluation harness behind ``spyglass eval``: labelled collections indexed once per
model (:mod:`~spyglass.eval.datasets`), ranking metrics with exact tie rules and bootstrap
intervals (:mod:`~spyglass.eval.metrics`), one module per protocol
(:mod:`~spyglass.eval.protocols`), and tables, JSON and plots of the results.

Every query goes through the engine (:class:`~spyglass.search.Searcher`), so any method
registered in :mod:`spyglass.query.methods` can be evaluated by name.
"""
