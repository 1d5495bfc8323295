"""The predictions table: the seam between anything that classifies faces and the audit.

One row per test image. Required: ``image_id``, ``race`` (true label), ``gender``, and ``age`` or ``age_band``;
then either the five class probabilities :data:`PROB_COLUMNS` (``prob_White`` ... ``prob_Others``) or a
predicted label ``pred_race``. Optional: ``path`` and ``sha256`` (thumbnails, paired comparisons), ``split``.
"""

from faceaudit.config import RACES

PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{race}" for race in RACES)
PRED_COLUMN = "pred_race"
LABEL_COLUMNS: tuple[str, ...] = ("image_id", "race", "gender", "age", "age_band")
OPTIONAL_COLUMNS: tuple[str, ...] = ("path", "sha256", "split")
PREDICTION_COLUMNS: tuple[str, ...] = (*LABEL_COLUMNS, *PROB_COLUMNS, PRED_COLUMN, *OPTIONAL_COLUMNS)
