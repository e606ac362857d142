"""Tuning every variant with the same budget: Optuna studies whose trials are ordinary runs.

``[search]`` (:mod:`dqnbench.config.search`) is run by
:func:`dqnbench.search.driver.run_search`: one study per variant in
``<results>/search/study.db``, trials asked in batches and handed to the runner as
one plan of cells, then each variant's best configuration (and its default one)
rerun on fresh test seeds. ``docs/tuning.md`` is the user guide. Importing this
package does not import Optuna (the ``tune`` extra); its modules that need it do.
"""
