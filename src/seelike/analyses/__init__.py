"""One module per question of the paper; each is an :class:`~seelike.analyses.base.Accumulator` fed by
:func:`seelike.driver.run` (the contract lives in :mod:`seelike.analyses.base`)."""
