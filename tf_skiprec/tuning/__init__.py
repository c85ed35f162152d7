"""Searching the accuracy-versus-compute trade-off with Keras Tuner (`train.py --mode=tune`).

  search.py  the tuner: each trial is one `run(config, workdir)`; the objective; the reports
  space.py   the searched dimensions, their CLI syntax, a trial's config, the compute limits
  report.py  the table of trials and the Pareto plot

Nothing is imported here: keras_tuner loads only when a search runs.
"""
