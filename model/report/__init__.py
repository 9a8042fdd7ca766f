"""The training report: one self-contained HTML page beside the model (``report.html``).

It shows how training went (learning curves), and for each evaluated split where the model is wrong (confusion,
per-class precision / recall / F1), whether its confidence can be trusted (reliability before and after
calibration), how much goes to a person (coverage against precision of the review threshold), which photos fool it
(a gallery with class-activation overlays) and, for generated photos, which generator factors it errs on.

``evaluation`` turns a model folder into per-split predictions, ``charts`` draws them with matplotlib (Agg), and
``page`` writes the HTML. Training-side code: it needs torch and matplotlib (the ``train`` extra).
"""

from model.report.page import REPORT_NAME, write_report

__all__ = ["REPORT_NAME", "write_report"]
