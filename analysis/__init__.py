"""Evaluation statistics, survival stratification and radiogenomics.

Public modules: ``analysis.roc`` (DeLong), ``analysis.calibration``, ``analysis.decision_curve``,
``analysis.evaluation``, ``analysis.survival``, ``analysis.genes``.
"""
